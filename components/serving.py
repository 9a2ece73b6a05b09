"""The registered model: raw pixels in, labels and class probabilities out.

Logged as an MLflow pyfunc whose artifacts are the trained weights and the normaliser fitted on the
training split, so `mlflow.pyfunc.load_model("models:/digits-classifier@champion").predict(images)`
takes images as they come: float32 (n, height, width, channels), pixel values 0-255.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

# What the loaded model imports (components.model/normalise and their imports), pinned to this environment.
SERVING_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "scikit-learn", "pydantic", "pyyaml")


def pinned_requirements() -> list[str]:
    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def predictions_frame(proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=[f"prob_{c}" for c in classes])
    frame.insert(0, "label", [classes[i] for i in proba.argmax(axis=1)])
    return frame


class ImageClassifier(PythonModel):
    def load_context(self, context) -> None:
        from components.model import load_model
        from components.normalise import Normaliser
        self.net, config = load_model(Path(context.artifacts["model"]))
        self.classes = config["classes"]
        self.normaliser = Normaliser.load(context.artifacts["normaliser"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from components.model import predict_proba
        return predictions_frame(predict_proba(self.net, self.normaliser.transform(np.asarray(model_input))),
                                 self.classes)


# Logged as "models from code": MLflow runs this file to rebuild the model instead of unpickling an object.
set_model(ImageClassifier())
