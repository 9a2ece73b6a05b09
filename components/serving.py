"""The registered model: raw input in, labels and class probabilities out.

Logged as an MLflow pyfunc whose artifacts are the trained weights and the preprocessing fitted on
the training split, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(x)` takes input as
it comes: images as float32 (n, height, width, channels) with pixel values 0-255, or a table
(DataFrame) with the feature columns, checked against the saved schema, missing values imputed.
"""
from __future__ import annotations

import contextlib
import io
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

# What the loaded model imports (components.model/normalise and their imports), pinned to this environment.
SERVING_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyarrow", "scikit-learn", "pandera", "joblib", "pydantic",
                    "pyyaml", "kfp")


def pinned_requirements() -> list[str]:
    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


# Runs in a fresh interpreter that imports nothing of this project first, so a registered model runs
# with the code it was logged with (its code_paths come first on sys.path), not with today's components/.
SCORE_SCRIPT = """
import sys, numpy as np, pandas as pd, mlflow
uri, source, out = sys.argv[1:]
raw = pd.read_parquet(source) if source.endswith(".parquet") else np.load(source)["raw"]
mlflow.pyfunc.load_model(uri).predict(raw).to_parquet(out, index=False)
"""


def score_registered_model(model_uri: str, raw) -> pd.DataFrame:
    """A registered model's predictions (label, prob_*) on raw input, in its own process with its own code.
    Raises RuntimeError with the model's last error line if it cannot score this input."""
    import os
    import subprocess
    import sys
    import tempfile
    from components import tracking
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / ("raw.parquet" if isinstance(raw, pd.DataFrame) else "raw.npz")
        if isinstance(raw, pd.DataFrame):
            raw.to_parquet(source, index=False)
        else:
            np.savez(source, raw=np.asarray(raw, dtype=np.float32))
        uri = tracking.absolute_tracking_uri()
        result = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, model_uri, str(source), str(Path(tmp) / "out.pq")],
                                cwd=tmp, capture_output=True, text=True,
                                env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri})
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"exit code {result.returncode}")
        return pd.read_parquet(Path(tmp) / "out.pq")


def predictions_frame(proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=[f"prob_{c}" for c in classes])
    frame.insert(0, "label", [classes[i] for i in proba.argmax(axis=1)])
    return frame


# Defining a PythonModel subclass makes MLflow warn that predict() has no type hints, through its own
# simplefilter("once") that no warning filter can silence. The logged signature validates input
# instead, so the warning is noise on every stage's and every prediction's stderr.
with contextlib.redirect_stderr(io.StringIO()):
    class Classifier(PythonModel):
        def load_context(self, context) -> None:
            from components.model import load_model
            from components.normalise import load_preprocess
            self.net, config = load_model(Path(context.artifacts["model"]))
            self.classes = config["classes"]
            self.meta, self.preprocessor = load_preprocess(Path(context.artifacts["preprocess"]))

        def predict(self, context, model_input, params=None) -> pd.DataFrame:
            from components.model import predict_proba
            if self.meta["kind"] == "tabular":
                x = self.preprocessor.transform(pd.DataFrame(model_input))
            else:
                x = self.preprocessor.transform(np.asarray(model_input))
            return predictions_frame(predict_proba(self.net, x), self.classes)


# Logged as "models from code": MLflow runs this file to rebuild the model instead of unpickling an object.
set_model(Classifier())
