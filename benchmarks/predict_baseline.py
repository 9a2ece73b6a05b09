"""The plain script that benchmark #9 measures `python -m components.predict` against: batch prediction with
MLflow's own loader, as its documentation shows it. `mlflow.pyfunc.load_model` downloads the whole model
(code, environment files, artifacts), imports the pyfunc and runs its load_context (components/serving.py
and what it imports); the images are read with Pillow as float32 pixels 0-255, (n, height, width, channels),
the input the model's signature takes, and the predictions written as CSV with the file paths as ids.

    python -m benchmarks.predict_baseline MODEL_URI IMAGE_FOLDER OUT.csv
"""

import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> None:
    model_uri, folder, out = argv or sys.argv[1:]
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() == ".png")
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32)[..., None] for p in paths])
    frame = mlflow.pyfunc.load_model(model_uri).predict(pixels)
    frame.insert(0, "id", [str(p) for p in paths])
    frame.to_csv(out, index=False)


if __name__ == "__main__":
    main()
