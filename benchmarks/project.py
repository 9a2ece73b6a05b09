"""A copy of this project in a temporary folder (code, dvc.yaml, a params file, its own MLflow store) that a
benchmark trains and registers with the real `dvc repro`, as a user's clone would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = deep_update(dict(base.get(key, {})), value) if isinstance(value, dict) else value
    return base


def copy_project(root: Path, params_file: Path = REPO / "params.yaml", changes: dict | None = None) -> dict:
    """components/, dvc.yaml and params_file (with `changes` merged in) under root, an empty MLflow store and
    models/ (a dependency of normalise and train); no data. Returns the environment whose `dvc` and MLflow
    store are this copy's."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = deep_update(yaml.safe_load(params_file.read_text()), changes or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "mlflow").mkdir()
    (root / "models").mkdir()
    shutil.copy(REPO / "models" / "README.md", root / "models")
    # MLflow exports the URIs it was set to into this process's environment: a child must not inherit them
    inherited = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {
        **inherited,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def dvc(root: Path, env: dict, *args: str) -> None:
    """`dvc ARGS` in root. Raises RuntimeError with its output when it fails."""
    result = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def reproduce(root: Path, env: dict) -> None:
    """dvc init (no git), analytics off, then `dvc repro`: the copy trains and registers its model."""
    dvc(root, env, "init", "--no-scm", "-q")
    dvc(root, env, "config", "core.analytics", "false")
    dvc(root, env, "repro")
