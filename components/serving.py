"""The registered model: raw input in, labels and class probabilities out.

Logged as an MLflow pyfunc whose artifacts are the trained weights and the preprocessing fitted on
the training split, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(x)` takes input as
it comes: images as float32 (n, height, width, channels) with pixel values 0-255, a table (DataFrame)
with the feature columns, checked against the saved schema, missing values imputed, or texts (a
DataFrame with a `text` column).

This project's own readers (predict, register's champion re-scoring) never load the pyfunc: MLflow runs
its Python code and unpickles its parts. They use components.scoring's load_registered, which reads the
weights and the preprocessing as data, so a crafted model in the registry cannot run code in them, and
which imports neither mlflow.pyfunc nor mlflow.models (this module does: import scoring, not serving,
to load and score a model quickly).
"""

from __future__ import annotations

import contextlib
import io
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

# Re-exported: the loader and scorer live in the light components.scoring (the pyfunc below calls score).
from components.scoring import (  # noqa: F401
    UnsafeArtifact,
    load_registered,
    predictions_frame,
    score,
    score_registered_model,
    tensor_input_shape,
)

# What the loaded model imports (components.model/normalise and their imports), pinned to this environment.
SERVING_PACKAGES = (
    "mlflow",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "pandera",
    "skops",
    "pydantic",
    "pyyaml",
)


def pinned_requirements(kind: str | None = None) -> list[str]:
    """The served model's pip requirements, pinned to this environment: the core's, and what its data kind's
    networks and preprocessing import (e.g. tokenizers and transformers for text)."""
    from components import kinds

    extra = kinds.get(kind).SERVING_PACKAGES if kind else ()
    return [f"{name}=={version(name).split('+')[0]}" for name in (*SERVING_PACKAGES, *extra)]


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
            return score(self.net, {"classes": self.classes}, self.meta, self.preprocessor, model_input)


# Logged as "models from code": MLflow runs this file to rebuild the model instead of unpickling an object.
set_model(Classifier())
