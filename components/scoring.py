"""A registered model as data, and its predictions: what batch prediction, register's champion re-scoring and
a model server need, without MLflow's pyfunc machinery.

load_registered downloads only the MLmodel file and the two artifacts it names (the weights and the fitted
preprocessing), through MLflow's public API (`models:/` URIs, whatever the store: the embedded sqlite store
or a tracking server), and loads them as data: the weights with torch.load(weights_only=True), the
preprocessing as JSON/skops. score turns raw input into labels and class probabilities with this project's
code. The MLflow pyfunc in components/serving.py (what `mlflow.pyfunc.load_model` runs) calls the same score.

Light on purpose: this module imports neither mlflow.pyfunc nor mlflow.models, and loads torch, MLflow and
the data kind's preprocessing only when a function needs them (scikit-learn only for a table model), so
`python -m components.predict` starts in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


class UnsafeArtifact(Exception):
    """A registered model's files are missing, not where its MLmodel says, or not plain data."""


def load_registered(model_uri: str, workdir: Path) -> tuple[dict, torch.nn.Module, dict, object]:
    """A registered model as data only: (MLmodel metadata, network, model config, preprocessor).

    Reads the MLmodel file (YAML) for where the weights and preprocessing are, downloads just those into
    workdir (a temporary folder of the caller's: the store is never written, so it may be read-only), and
    loads the weights with torch.load(weights_only=True) and the preprocessing as JSON/skops. The pyfunc's
    Python code and cloudpickled parts are never loaded: a crafted model cannot run code here, it can only
    fail to load. Raises UnsafeArtifact (one line) when the files are missing, outside the model, or not data;
    MlflowException when the model URI is unknown."""
    import mlflow.artifacts
    import yaml

    from components.errors import UserError
    from components.model import load_model

    mlmodel = yaml.safe_load(
        Path(mlflow.artifacts.download_artifacts(f"{model_uri}/MLmodel", dst_path=str(workdir))).read_text()
    )
    try:
        artifacts = {
            key: str(mlmodel["flavors"]["python_function"]["artifacts"][key]["path"]) for key in ("model", "preprocess")
        }
    except (KeyError, TypeError):
        raise UnsafeArtifact(
            "its MLmodel names no 'model' and 'preprocess' artifacts; it was not registered by this project"
        ) from None
    local = {}
    for key, path in artifacts.items():
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise UnsafeArtifact(f"its MLmodel points {key} outside the model ({path[:80]!r})")
        local[key] = Path(mlflow.artifacts.download_artifacts(f"{model_uri}/{path}", dst_path=str(workdir / key)))

    # messages name the files inside the model, not in this temporary folder
    def inside_model(exc: Exception) -> str:
        text = str(exc)
        for key in local:
            text = text.replace(str(local[key]), artifacts[key])
        return text

    try:
        net, config = load_model(local["model"])
        meta, preprocessor = load_preprocess(local["preprocess"])
    except (UserError, OSError) as exc:
        raise UnsafeArtifact(inside_model(exc)) from None
    except KeyError as exc:  # JSON that parses but lacks what this project writes
        raise UnsafeArtifact(
            f"{artifacts['preprocess']}: lacks the key {exc}; it was not saved by this project"
        ) from None
    return (mlmodel.get("metadata") or {}) | {"input_shape": tensor_input_shape(mlmodel)}, net, config, preprocessor


def load_preprocess(path: Path) -> tuple[dict, object]:
    """The preprocessing normalise saved (components.normalise.load_preprocess, which this is, without
    importing normalise and its scikit-learn): (meta.json, the kind's fitted preprocessor), loaded as data.
    Only the model's own kind loads what it needs (a table model's transformer: skops and scikit-learn).
    Raises UserError naming the file when it is missing or not what this project writes."""
    from components import kinds
    from components.io import read_json

    meta = read_json(path / "meta.json")
    return meta, kinds.get(meta.get("kind")).load_preprocessing(path)


def tensor_input_shape(mlmodel: dict) -> list[int] | None:
    """The input shape (first axis -1: any number of examples) that the MLmodel's signature gives a model
    taking one tensor (images), or None (a table, or no signature)."""
    import json

    try:
        inputs = json.loads(mlmodel["signature"]["inputs"])
        return [int(n) for n in inputs[0]["tensor-spec"]["shape"]] if len(inputs) == 1 else None
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def score(net, config: dict, meta: dict, preprocessor, raw) -> pd.DataFrame:
    """Predictions (label, prob_<class> float32) of a loaded model on raw input, as its data kind (meta["kind"])
    takes it: images (n, h, w, c) pixel values 0-255, a table (DataFrame) with the feature columns, or texts.
    Raises UserError for an unknown kind or input the preprocessing refuses."""
    from components import kinds
    from components.errors import UserError
    from components.model import predict_proba

    expected, shape = meta.get("input_shape"), np.shape(raw)
    # A size-agnostic network (global pooling) would score other sizes too, confidently and wrongly.
    if expected and (
        len(shape) != len(expected) or any(e not in (-1, n) for e, n in zip(expected, shape, strict=True))
    ):
        raise UserError(
            f"input of shape {tuple(shape[1:])} per example, but the model was trained on {tuple(expected[1:])} "
            "(its signature); give input of that shape (images: train with data.image_size to resize any input)"
        )
    x = kinds.get(meta.get("kind", "")).transform(preprocessor, raw)
    return predictions_frame(predict_proba(net, x), config["classes"])


def score_registered_model(model_uri: str, raw) -> pd.DataFrame:
    """A registered model's predictions (label, prob_*) on raw input, loaded as data by load_registered with
    this project's code. Raises RuntimeError with one line if it cannot be loaded or cannot score this input."""
    import tempfile

    from components.errors import UserError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            meta, net, config, preprocessor = load_registered(model_uri, Path(tmp))
            return score(net, config, meta, preprocessor, raw)
        except (UnsafeArtifact, UserError) as exc:
            raise RuntimeError(str(exc)) from None
        except (ValueError, RuntimeError, OSError) as exc:  # e.g. input of another shape than it was trained on
            raise RuntimeError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None


def predictions_frame(proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=[f"prob_{c}" for c in classes])
    frame.insert(0, "label", [classes[i] for i in proba.argmax(axis=1)])
    return frame
