"""predict: batch predictions from a registered model, on a table file or an image folder.

    python -m components.predict --model models:/penguins-classifier@champion \
        --input new_penguins.csv --output predictions.csv [--csv sep=';' --csv encoding=cp1252]

Needs only the MLflow store (MLFLOW_TRACKING_URI, default the project's embedded sqlite store, which
it never creates or writes): the model carries its preprocessing, its schema and how its training files
were read. It is loaded as data (weights and preprocessing), never by unpickling, and scored by this
project's code. New files are read as the training data were (CSV settings, missing-value markers,
labels and categories stripped, images composited on the same background), and validated against the
model's schema; errors name the file's line. --csv KEY=VALUE overrides one of those CSV settings for a
file written otherwise. The output has an `id` column (row number from 0, or file path), `label`, and
one `prob_<class>` column per class.
"""
import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import UserError, run_cli
from components.io import atomic_path

log = logging.getLogger(__name__)


def read_images(root: Path, meta: dict) -> tuple[list[str], np.ndarray]:
    """Every visible image file under root (any depth), decoded as the model's training images were
    (the same background and pixel limit); a bad file, or one of another size, is an error naming it."""
    from components.image_files import IMAGE_SUFFIXES, BadImage, decode, list_files
    from components.params import MAX_IMAGE_PIXELS       # models registered before the limit travelled with them
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; this model takes a folder of images (check --input)")
    visible, hidden = list_files(root)
    paths = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
    if hidden:
        log.info("skipped %d hidden files (e.g. %s)", len(hidden), hidden[0])
    if not paths:
        raise UserError(f"{root}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for path in paths:
        try:
            images.append(decode(path.read_bytes(), meta.get("channels", 1), meta.get("image_size"),
                                 meta.get("background") or "white", meta.get("max_image_pixels", MAX_IMAGE_PIXELS)))
        except BadImage as exc:
            raise UserError(f"{path}: {exc}; fix or remove it") from None
        except OSError as exc:              # a broken symbolic link, no permission
            raise UserError(f"{path}: cannot be read ({exc.strerror}); fix or remove it") from None
        if images[-1].shape != images[0].shape:
            height, width = images[0].shape[:2]
            raise UserError(f"{path}: image is {images[-1].shape[0]}x{images[-1].shape[1]}, but {paths[0]} is "
                            f"{height}x{width} and the model was trained without data.image_size; resize them to "
                            "the training images' size")
    return [str(p) for p in paths], np.stack(images).astype(np.float32)


def read_rows(source: Path, schema, meta: dict, overrides: dict):
    """A table file read with the model's CSV settings (`overrides` replacing some), its columns typed as
    the model's schema says (numbers parsed with their separators and missing markers, categories
    stripped). Returns the TableFile (for line numbers) and the model's input columns. Raises UserError
    naming a missing column, or the line of a value that is not a number or is infinite."""
    from components.normalise import require_columns
    from components.table_files import Advice, read_column, read_table
    settings = csv_settings(meta.get("csv") or {}, overrides)
    table = read_table(source, None, settings, Advice(command_line=True))
    columns = list(table.frame.columns)
    if len(columns) == 1 and len(schema.columns) > 1:
        raise UserError(f"{source}: read as one column {columns[0][:60]!r} with the separator "
                        f"{table.read.get('sep')!r} the model's training file used; pass --csv sep=... with this "
                        "file's separator")
    require_columns(list(schema.columns), columns, str(source))
    raw = pd.DataFrame(index=table.frame.index)
    for column, spec in schema.columns.items():
        numeric = "float" in str(spec.dtype)
        typed = read_column(table, column, "numeric" if numeric else "categorical", settings,
                            table.read.get("decimal") or ".",
                            advice="the model takes numbers here: fix the value, or empty the cell if it is unknown")
        raw[column] = pd.Series(typed.values, index=raw.index, dtype=np.float64 if numeric else object)
        infinite = np.flatnonzero(np.isinf(raw[column].to_numpy())) if numeric else []
        if len(infinite):
            raise UserError(f"{table.where(int(infinite[0]))}: column {column!r} holds infinity (or a number too "
                            "large for float64); fix the value")
    return table, raw


def csv_settings(saved: dict, overrides: dict):
    """The model's CSV settings with --csv KEY=VALUE overrides, checked by the same schema as data.csv.
    Values are taken as written (--csv sep=, is a comma), except null, keep_default_na's true/false and
    na_values, a comma-separated list."""
    from components.params import validate_params

    def value(key: str, text: str):
        if text == "null":
            return None
        if key == "keep_default_na":
            return text.lower() in ("true", "yes", "1")
        return text.split(",") if key == "na_values" else text
    merged = saved | {key: value(key, text) for key, text in overrides.items()}
    return validate_params({"data": {"csv": merged}}, "--csv").data.csv


def predict(model_uri: str, source: Path, output: Path, csv: dict | None = None) -> pd.DataFrame:
    """Predictions of the registered model `model_uri` on a table file or an image folder, written to
    output (.csv or .parquet). csv: data.csv keys overriding the model's own for this file.
    The model is loaded as data (serving.load_registered: weights and preprocessing, never its pickled
    or Python parts) into a temporary folder, so the store may be read-only.
    Raises UserError naming the file, line or column for bad input, or the model's file that is not data."""
    import tempfile
    import mlflow
    from components import tracking
    from components.normalise import check_schema
    from components.serving import UnsafeArtifact, load_registered, score

    if output.suffix not in (".csv", ".parquet"):
        raise UserError(f"--output {output}: write .csv or .parquet")
    if not source.exists():
        raise UserError(f"--input {source}: not found")
    tracking.configure(create=False)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            meta, net, config, preprocessor = load_registered(model_uri, Path(tmp))
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(f"{model_uri}: not found in {tracking.tracking_uri()} "
                            f"({str(exc).splitlines()[0][:160]})") from None
        except UnsafeArtifact as exc:
            raise UserError(f"{model_uri}: {exc}") from None
    if meta.get("kind") == "tabular":
        # The input contract saved with the model: a clear error naming the file's line, and the columns
        # coerced to the logged types (an all-integer CSV column becomes float64, as in training).
        table, raw = read_rows(source, preprocessor.schema, meta, csv or {})
        ids = [str(i) for i in range(len(raw))]
        raw = check_schema(preprocessor.schema, raw, str(source), where=table.where)
    else:
        ids, raw = read_images(source, meta)
    try:
        frame = score(net, config, meta, preprocessor, raw)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{source}: {model_uri} cannot score this input: {str(exc).splitlines()[0][:160]}") from None
    frame.insert(0, "id", ids)
    with atomic_path(output) as tmp:
        frame.to_parquet(tmp, index=False) if output.suffix == ".parquet" else frame.to_csv(tmp, index=False)
    log.info("wrote %d predictions to %s", len(frame), output)
    return frame


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Batch predictions from a registered MLflow model.")
    parser.add_argument("--model", required=True, help="e.g. models:/NAME@champion (register.model_name)")
    parser.add_argument("--input", type=Path, required=True, help="CSV/TSV/Parquet table, or a folder of images")
    parser.add_argument("--output", type=Path, required=True, help=".csv or .parquet")
    parser.add_argument("--csv", action="append", default=[], metavar="KEY=VALUE",
                        help="read this file otherwise than the model's training file, e.g. --csv sep=';' --csv "
                             "encoding=cp1252 (the keys of data.csv in params.yaml)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.csv:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--csv {item!r}: expected KEY=VALUE, e.g. --csv sep=';'")
        overrides[key] = value
    predict(args.model, args.input, args.output, overrides)


if __name__ == "__main__":
    run_cli(main)
