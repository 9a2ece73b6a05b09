"""predict: batch predictions from a registered model, on a table file or an image folder.

    python -m components.predict --model models:/penguins-classifier@champion \
        --input new_penguins.csv --output predictions.csv

Needs only the MLflow store (MLFLOW_TRACKING_URI, default the embedded sqlite store): the model
carries its preprocessing, its schema and how its training files were read, and runs with the code it
was logged with. New files are read as the training data were (CSV settings, missing-value markers,
labels and categories stripped, images composited on the same background), and validated against the
model's schema; errors name the file's line. The output has an `id` column (row number from 0, or file
path), `label`, and one `prob_<class>` column per class.
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
    """Every visible image file under root (any depth), decoded as the model's training images were;
    a bad file is an error naming it."""
    from components.image_files import IMAGE_SUFFIXES, BadImage, decode, list_files
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
                                 meta.get("background") or "white"))
        except BadImage as exc:
            raise UserError(f"{path}: {exc}; fix or remove it") from None
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise UserError(f"{root}: images differ in size {sorted(shapes)[:2]} and the model was trained without "
                        "data.image_size; resize them to one size")
    return [str(p) for p in paths], np.stack(images).astype(np.float32)


def read_rows(source: Path, schema, meta: dict):
    """A table file read with the model's CSV settings, its columns typed as the model's schema says
    (numbers parsed with their separators and missing markers, categories stripped). Returns the
    TableFile (for line numbers) and the model's input columns that the file has (check_schema names
    the missing ones). Raises UserError naming the line of a value that is not a number."""
    from components.params import Csv
    from components.table_files import read_column, read_table
    settings = Csv.model_validate(meta.get("csv") or {})
    table = read_table(source, None, settings)
    raw = pd.DataFrame(index=table.frame.index)
    for column, spec in schema.columns.items():
        if column not in table.frame.columns:
            continue
        numeric = "float" in str(spec.dtype)
        typed = read_column(table, column, "numeric" if numeric else "categorical", settings, settings.decimal or ".",
                            advice="the model takes numbers here: fix the value, or empty the cell if it is unknown")
        raw[column] = pd.Series(typed.values, index=raw.index, dtype=np.float64 if numeric else object)
    return table, raw


def predict(model_uri: str, source: Path, output: Path) -> pd.DataFrame:
    import mlflow
    from components import tracking
    from components.serving import score_registered_model

    tracking.configure()
    try:
        meta = mlflow.models.get_model_info(model_uri).metadata or {}
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(f"{model_uri}: not found in {tracking.tracking_uri()} ({str(exc).splitlines()[0]})") from None
    if meta.get("kind") == "tabular":
        # The input contract saved with the model: a clear error before MLflow's own checks, and the
        # columns coerced to the logged types (an all-integer CSV column becomes float64, as in training).
        import pandera.pandas as pa
        from components.normalise import check_schema
        schema_file = mlflow.artifacts.download_artifacts(f"{model_uri}/artifacts/preprocess/schema.yaml")
        schema = pa.DataFrameSchema.from_yaml(Path(schema_file))
        table, raw = read_rows(source, schema, meta)
        ids = [str(i) for i in range(len(raw))]
        raw = check_schema(schema, raw, str(source), where=table.where)
    else:
        if not source.is_dir():
            raise UserError(f"{source}: not a folder; {model_uri} takes a folder of images")
        ids, raw = read_images(source, meta)
    try:
        frame = score_registered_model(model_uri, raw)
    except RuntimeError as exc:
        raise UserError(f"{source}: {model_uri} cannot score this input: {exc}") from None
    frame.insert(0, "id", ids)
    with atomic_path(output) as tmp:
        frame.to_parquet(tmp, index=False) if output.suffix == ".parquet" else frame.to_csv(tmp, index=False)
    log.info("wrote %d predictions to %s", len(frame), output)
    return frame


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Batch predictions from a registered MLflow model.")
    parser.add_argument("--model", required=True, help="e.g. models:/digits-classifier@champion")
    parser.add_argument("--input", type=Path, required=True, help="CSV/TSV/Parquet table, or a folder of images")
    parser.add_argument("--output", type=Path, required=True, help=".csv or .parquet")
    args = parser.parse_args(argv)
    predict(args.model, args.input, args.output)


if __name__ == "__main__":
    run_cli(main)
