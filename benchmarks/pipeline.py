"""`dvc repro` wall seconds: the whole default pipeline from nothing, then again with nothing to do.
Runs in a copy of this project (code, dvc.yaml, params.yaml, the sample data) with its own MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICK = {"train": {"epochs": 2}, "augment": {"copies": 1}, "register": {"bootstrap_resamples": 100}}


def dvc(root: Path, env: dict, *args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    if not (REPO / "data" / "digits").is_dir():
        raise SystemExit("benchmarks: data/digits is missing; run `make data` first")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        for name in ("components", "data"):
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("dvc.yaml", "params.yaml"):
            shutil.copy(REPO / name, root / name)
        if quick:
            params = yaml.safe_load((root / "params.yaml").read_text())
            for section, values in QUICK.items():
                params[section].update(values)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (root / "mlflow").mkdir()
        (root / "models").mkdir()  # a dependency of normalise and train (train.pretrained checkpoints); none here
        shutil.copy(REPO / "models" / "README.md", root / "models")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        dvc(root, env, "init", "--no-scm", "-q")
        dvc(root, env, "config", "core.analytics", "false")
        fresh = dvc(root, env, "repro")
        noop = min(dvc(root, env, "repro") for _ in range(3))
    return {
        "pipeline": "default params" if not quick else "default params, shortened (--quick)",
        "pipeline_fresh_s": round(fresh, 1),
        "repro_noop_s": round(noop, 2),
    }
