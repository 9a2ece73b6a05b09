"""predict: batch predictions from a registered model, on a table file or an image folder.

    python -m components.predict --model models:/penguins-classifier@champion \
        --input new_penguins.csv --output predictions.csv

Needs only the MLflow store (MLFLOW_TRACKING_URI, default the embedded sqlite store): the model
carries its preprocessing and schema, and runs with the code it was logged with. The input is
validated against the model's schema; the output has an `id` column (row number or file path),
`label`, and one `prob_<class>` column per class.
"""
import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import UserError, run_cli
from components.io import atomic_path

log = logging.getLogger(__name__)


def read_images(root: Path, image_size, channels: int) -> tuple[list[str], np.ndarray]:
    """Every image file under root (any depth), decoded as the model was trained; a bad file is an error."""
    from components.clean import IMAGE_SUFFIXES, decode
    from components.params import Data
    data = Data(image_size=image_size, channels=channels)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"{root}: no PNG/JPEG/BMP images found")
    images = []
    for path in paths:
        try:
            images.append(decode(path.read_bytes(), data))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable image ({str(exc).splitlines()[0]}); fix or remove it") from None
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise UserError(f"{root}: images differ in size {sorted(shapes)[:2]} and the model was trained without "
                        "data.image_size; resize them to one size")
    return [str(p) for p in paths], np.stack(images).astype(np.float32)


def predict(model_uri: str, source: Path, output: Path) -> pd.DataFrame:
    import mlflow
    from components import tracking
    from components.clean import read_table
    from components.serving import score_registered_model

    tracking.configure()
    try:
        meta = mlflow.models.get_model_info(model_uri).metadata or {}
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(f"{model_uri}: not found in {tracking.tracking_uri()} ({str(exc).splitlines()[0]})") from None
    if meta.get("kind") == "tabular":
        table = read_table(source, None)
        ids, raw = [str(i) for i in range(len(table))], table.drop(columns=[meta["target"]], errors="ignore")
        # The input contract saved with the model: a clear error before MLflow's own checks, and the
        # columns coerced to the logged types (an all-integer CSV column becomes float64, as in training).
        import pandera.pandas as pa
        from components.normalise import check_schema
        schema_file = mlflow.artifacts.download_artifacts(f"{model_uri}/artifacts/preprocess/schema.yaml")
        raw = check_schema(pa.DataFrameSchema.from_yaml(Path(schema_file)), raw, str(source))
    else:
        if not source.is_dir():
            raise UserError(f"{source}: not a folder; {model_uri} takes a folder of images")
        ids, raw = read_images(source, meta.get("image_size"), meta.get("channels", 1))
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
    parser.add_argument("--input", type=Path, required=True, help="CSV/Parquet table, or a folder of images")
    parser.add_argument("--output", type=Path, required=True, help=".csv or .parquet")
    args = parser.parse_args(argv)
    predict(args.model, args.input, args.output)


if __name__ == "__main__":
    run_cli(main)
