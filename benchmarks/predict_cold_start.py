"""Benchmark #9: the cold start of batch prediction, `python -m components.predict` on 8 digit images.

A temporary copy of this project trains and registers a digits model in its own MLflow sqlite store (`dvc
repro`, shortened params; about 40 s on 2 cores), then two child processes score the same 8 images from
`models:/digits-classifier/1`, each timed by wall clock and measured for peak RSS (os.wait4's
ru_maxrss), the best of `repeats` interleaved runs (the first ones warm the page cache): ours, the predict
CLI, which loads the model as data (components/scoring.py), and the plain baseline
benchmarks/predict_baseline.py, `mlflow.pyfunc.load_model(uri).predict(pixels)`. Both must give the same
labels and probabilities (within 1e-6). Goals: predict_cold_start_s <= 5 on 2 cores;
predict_cold_start_ratio = baseline_s / ours_s and the RSS figures are reported.

    from benchmarks.predict_cold_start import run; run()
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.project import copy_project, reproduce
from benchmarks.table import measure

REPO = Path(__file__).resolve().parents[1]
MODEL = "models:/digits-classifier/1"  # the version register made (the short training may miss @champion)
SHORT = {"train": {"epochs": 2, "width": 16}, "augment": {"copies": 1}, "register": {"bootstrap_resamples": 100}}


def registered_project(root: Path, per_class: int = 30) -> dict:
    """A copy of the project (code, dvc.yaml, params.yaml shortened) on `per_class` digit images of each
    class, reproduced so that its own store holds the champion; returns the environment that points at it."""
    from components.sample_data import export_digits

    env = copy_project(root, changes=SHORT)
    export_digits(root / yaml.safe_load((root / "params.yaml").read_text())["data"]["path"], limit_per_class=per_class)
    reproduce(root, env)
    return env


def sample_images(data: Path, dest: Path, n: int = 8) -> Path:
    """The first image of each of the first n classes, copied into one folder."""
    dest.mkdir(parents=True)
    for folder in sorted(p for p in data.iterdir() if p.is_dir())[:n]:
        first = min(folder.glob("*.png"))
        shutil.copy(first, dest / f"{folder.name}_{first.name}")
    return dest


def run(repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        env = registered_project(root)
        images = sample_images(root / "data" / "digits", Path(tmp) / "images")
        ours_csv, baseline_csv = Path(tmp) / "ours.csv", Path(tmp) / "baseline.csv"
        ours_cmd = [sys.executable, "-m", "components.predict", "--model", MODEL, "--input", str(images)]
        baseline_cmd = [sys.executable, "-m", "benchmarks.predict_baseline", MODEL, str(images), str(baseline_csv)]
        ours, baseline = [], []
        for _ in range(repeats):  # interleaved, so a busy moment of the machine hits both alike
            ours.append(measure([*ours_cmd, "--output", str(ours_csv)], env))
            baseline.append(measure(baseline_cmd, env))
        predictions = pd.read_csv(ours_csv)
        same_predictions(predictions, pd.read_csv(baseline_csv))
    ours_s, ours_gb = min(s for s, _ in ours), min(gb for _, gb in ours)
    baseline_s, baseline_gb = min(s for s, _ in baseline), min(gb for _, gb in baseline)
    return {
        "predict_cold_start_s": round(ours_s, 2),
        "predict_cold_start_baseline_s": round(baseline_s, 2),
        "predict_cold_start_ratio": round(baseline_s / ours_s, 2),
        "predict_peak_rss_gb": round(ours_gb, 3),
        "predict_baseline_peak_rss_gb": round(baseline_gb, 3),
        "predict_peak_rss_ratio": round(baseline_gb / ours_gb, 2),
        "predict_images": len(predictions),
    }


def same_predictions(ours: pd.DataFrame, baseline: pd.DataFrame) -> None:
    """Both sides did the same work: the same ids and labels, probabilities within 1e-6. Raises RuntimeError."""
    probs = [c for c in ours.columns if c.startswith("prob_")]
    if (
        list(ours.columns) != list(baseline.columns)
        or ours["id"].tolist() != baseline["id"].tolist()
        or ours["label"].astype(str).tolist() != baseline["label"].astype(str).tolist()
        or (ours[probs] - baseline[probs]).abs().to_numpy().max() > 1e-6
    ):
        raise RuntimeError(f"predict and the pyfunc baseline disagree:\n{ours.head()}\n{baseline.head()}")
