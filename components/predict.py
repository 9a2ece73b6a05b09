"""predict: batch predictions from a registered model, on a table file, an image folder or text files.

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

Starts in seconds: it imports what scoring this model needs (components.scoring: torch, MLflow's artifact
download, the model kind's own preprocessing), never MLflow's pyfunc, and ends without Python's teardown.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from components.errors import UserError, run_cli
from components.io import atomic_path

log = logging.getLogger(__name__)


def predict(model_uri: str, source: Path, output: Path, csv: dict | None = None) -> pd.DataFrame:
    """Predictions of the registered model `model_uri` on a table file or an image folder, written to
    output (.csv or .parquet). csv: data.csv keys overriding the model's own for this file.
    The model is loaded as data (scoring.load_registered: weights and preprocessing, never its pickled
    or Python parts) into a temporary folder, so the store may be read-only.
    Raises UserError naming the file, line or column for bad input, or the model's file that is not data."""
    import tempfile

    import mlflow

    from components import kinds, tracking
    from components.scoring import UnsafeArtifact, load_registered, score

    if output.suffix not in (".csv", ".parquet"):
        raise UserError(f"--output {output}: write .csv or .parquet")
    if not source.exists():
        raise UserError(f"--input {source}: not found")
    tracking.configure(create=False)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            meta, net, config, preprocessor = load_registered(model_uri, Path(tmp))
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(
                f"{model_uri}: not found in {tracking.tracking_uri()} ({str(exc).splitlines()[0][:160]})"
            ) from None
        except UnsafeArtifact as exc:
            raise UserError(f"{model_uri}: {exc}") from None
    # Read as the training data were (the model's metadata says how), and, for a table, checked against the
    # input contract saved with the model: a clear error naming the file's line.
    ids, raw = kinds.get(meta.get("kind", "")).read_input(source, meta, preprocessor, csv or {})
    try:
        frame = score(net, config, meta, preprocessor, raw)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{source}: {model_uri} cannot score this input: {str(exc).splitlines()[0][:160]}") from None
    frame.insert(0, "id", ids)
    with atomic_path(output) as tmp:
        frame.to_parquet(tmp, index=False) if output.suffix == ".parquet" else frame.to_csv(tmp, index=False)
    log.info("wrote %d predictions to %s", len(frame), output)
    return frame


def fetched_input(folder: Path) -> Path:
    """What to predict on in a folder that Kubeflow's fetch wrote: its one file when that is a table file (fetch
    copies a single table file into a folder), else the folder itself (images, or .txt/.eml files)."""
    from components.table_files import TABLE_FORMATS

    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    if len(files) == 1 and len(list(folder.iterdir())) == 1 and files[0].suffix.lower() in TABLE_FORMATS:
        return files[0]
    return folder


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Batch predictions from a registered MLflow model.")
    parser.add_argument("--model", required=True, help="e.g. models:/NAME@champion (register.model_name)")
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="CSV/TSV/Parquet/JSON Lines table, a folder of images, or a folder of .txt/.eml files",
    )
    parser.add_argument("--output", type=Path, required=True, help=".csv or .parquet")
    parser.add_argument(
        "--csv",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="read this file otherwise than the model's training file, e.g. --csv sep=';' --csv "
        "encoding=cp1252 (the keys of data.csv in params.yaml)",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.csv:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--csv {item!r}: expected KEY=VALUE, e.g. --csv sep=';'")
        overrides[key] = value
    predict(args.model, args.input, args.output, overrides)


def exit_at_once() -> None:
    """End a finished run without Python's interpreter teardown, exit code 0. With torch and MLflow loaded,
    the teardown (their modules freed, their libraries' static destructors) costs about 2 s and over 100 MB
    of peak memory, longer than the predictions of a small batch: the output is written and closed by now
    (atomic_path), and logging and the standard streams are flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    run_cli(main)  # a failure exits here, through sys.exit, as every stage's
    exit_at_once()
