"""MLflow plumbing: where the store is, one run per pipeline execution, and the tags every run carries.

Default store: sqlite:///mlflow/mlflow.db with artifacts in mlflow/artifacts, relative to the project
root (where DVC runs the stages). MLFLOW_TRACKING_URI overrides it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402  (after the telemetry switch)
from mlflow.tracking import MlflowClient  # noqa: E402

from components.errors import UserError  # noqa: E402


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def absolute_tracking_uri() -> str:
    """The tracking URI with a relative sqlite path made absolute, for processes with another working dir."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def configure() -> str:
    """Point MLflow at the store (MLflow exports it to child processes too); a local sqlite store gets its
    folder created and an absolute path, so children with another working directory find the same store."""
    uri = absolute_tracking_uri()
    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """Get or create the experiment; in a local sqlite store its artifacts live beside the database."""
    uri = configure()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    db = _sqlite_file(uri)
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    return MlflowClient().create_experiment(name, artifact_location=location)


def resume_run(run_id: str) -> mlflow.ActiveRun:
    """Continue the run that train started, so one pipeline execution is one MLflow run."""
    configure()
    try:
        MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise UserError(f"MLflow run {run_id} (from train) is not in {tracking_uri()}; "
                        "rerun training with `dvc repro -f train`") from None
    return mlflow.start_run(run_id=run_id)


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the working tree, or ('unknown', False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def data_hash(dvc_file: str | Path = "data.dvc") -> str:
    """The md5 DVC recorded for the raw data, so a model can be traced to the exact data it saw."""
    try:
        return str(yaml.safe_load(Path(dvc_file).read_text())["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def lineage_tags(device: str, engine: str = "dvc") -> dict[str, str]:
    commit, dirty = git_commit()
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "data_hash": data_hash(),
            "engine": engine, "device": device}


def flatten(prefix: str, value: object) -> dict[str, object]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}, as MLflow params are flat."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, sub in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return flat
    return {prefix: value}
