"""The hyperparameter search (`python -m pipelines.tune`): 12 trials, TPE and median pruning.

1. Speed, on the default project (the digits CNN, params.yaml's tune.space: lr, width, batch size) with
   train.epochs 8 (patience 3): a search at parallelism 1, then one at parallelism 2 (a new study, its own
   seed). Trials per hour (driver wall time, process start and the MLflow summary included); the driver's
   overhead per trial at parallelism 1: the time from the first trial's start to the last one's end not spent
   in the train component (`fit`, timed inside each trial, less the pruning callback), as a share of that
   time, and in ms per trial. The same for examples/penguins (60 epochs of a tiny MLP: trials under a second).
2. Quality, on examples/penguins with a short budget (train.epochs 3), where the example's defaults are not the
   best settings: the best validation macro-F1 of a 12-trial search against the defaults' (the same `fit`).
And what MLflow holds (parent runs, child runs). Temporary copies of the project, their own MLflow stores.
"""

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
SHORT = {"epochs": 3, "patience": 3}  # the quality figure's budget


def project(root: Path, env: dict, quick: bool, example: str) -> None:
    """A project holding the example's data ("digits": the default params.yaml; "penguins": the CSV and
    examples/penguins/params.yaml), prepared by `dvc repro augment`."""
    from components.sample_data import export_penguins

    for name in ("components", "pipelines"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    (root / "models").mkdir()
    (root / "mlflow").mkdir()
    if example == "digits":
        shutil.copytree(REPO / "data" / "digits", root / "data" / "digits")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["train"].update(epochs=8, patience=3)
    else:
        export_penguins(root / "data" / "penguins" / "penguins.csv")
        params = yaml.safe_load((REPO / "examples" / "penguins" / "params.yaml").read_text())
    if quick:
        params["train"].update(epochs=3, patience=3)
    params["tune"].update(n_trials=12 if not quick else 3)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"], ["repro", "-q", "augment"]):
        subprocess.run(["dvc", *args], cwd=root, env=env, check=True, capture_output=True)


def search(root: Path, env: dict, parallelism: int, train: dict | None = None) -> dict:
    """One search to tune.n_trials at this parallelism (a new study: its own sampler seed), with `train`
    set in params.yaml (and kept there); its figures."""
    import optuna

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(train or {})
    params["tune"].update(parallelism=parallelism, seed=params["tune"]["seed"] + parallelism)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.tune"], cwd=root, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    best = yaml.safe_load((root / "reports" / "tune" / "best.yaml").read_text())
    trials = optuna.load_study(study_name=best["study"], storage=best["storage"]).get_trials()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    train_s = sum(t.user_attrs["train_s"] for t in trials)
    return {
        "wall_s": round(wall, 1),
        "trials": len(trials),
        "trials_per_hour": round(len(trials) / wall * 3600, 1),
        "states": best["trials"],
        "epochs_run": sum(len(t.intermediate_values) for t in trials),
        "best_val_macro_f1": best["value"],
        "best_params": best["params"],
        # parallelism 1: trials run one after another, so the span minus the time in fit is the driver's share
        "overhead_fraction": round((span - train_s) / span, 4) if parallelism == 1 else None,
        "overhead_ms_per_trial": round((span - train_s) / len(trials) * 1000) if parallelism == 1 else None,
        "startup_and_summary_s": round(wall - span, 1),
        "study": best["study"],
    }


def default_score(root: Path) -> float:
    """The validation macro-F1 of the example's own params (the same fit and budget as a trial)."""
    from components.params import load_params
    from components.train import epoch_score, fit, load_inputs, resolve_monitor

    params = load_params(root / "params.yaml")
    train = load_inputs(root / "outputs/augmented/train.npz", ("x", "y", "classes"))
    val = load_inputs(root / "outputs/split/val.npz", ("x", "y"))
    n = len(train["classes"])
    _, history = fit(train["x"], train["y"], val["x"], val["y"], n, params.train, params.seed, params=params)
    monitor = resolve_monitor(params.train.monitor, len(val["y"]), n)
    return max(history, key=lambda r: epoch_score(monitor, r["val_macro_f1"], r["val_loss"]))["val_macro_f1"]


def environment(root: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def run(quick: bool = False) -> dict:
    from mlflow import MlflowClient

    if not (REPO / "data" / "digits").is_dir():
        raise SystemExit("benchmarks: data/digits is missing; run `make data` first")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        digits, penguins = Path(tmp) / "digits", Path(tmp) / "penguins"
        for root, example in ((digits, "digits"), (penguins, "penguins")):
            root.mkdir()
            project(root, environment(root), quick, example)
        serial = search(digits, environment(digits), 1)
        parallel = search(digits, environment(digits), 2)
        small = search(penguins, environment(penguins), 1)
        short = search(penguins, environment(penguins), 1, SHORT) if not quick else small
        default = default_score(penguins)  # with the short budget, now in its params.yaml
        client = MlflowClient(environment(penguins)["MLFLOW_TRACKING_URI"])
        runs = client.search_runs([client.get_experiment_by_name("penguins").experiment_id], max_results=1000)
        parents = [r for r in runs if "optuna_study" in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {
        "tune_data": "speed: digits CNN (train.epochs 8) and examples/penguins (60 epochs); quality: "
        "examples/penguins at train.epochs 3; 12 trials each, TPE + median pruning",
        "tune_trials_per_hour_p1": serial["trials_per_hour"],
        "tune_trials_per_hour_p2": parallel["trials_per_hour"],
        "tune_p2_speedup": round(parallel["trials_per_hour"] / serial["trials_per_hour"], 2),
        "tune_overhead_fraction": serial["overhead_fraction"],
        "tune_overhead_ms_per_trial": serial["overhead_ms_per_trial"],
        "tune_penguins_overhead_fraction": small["overhead_fraction"],
        "tune_penguins_overhead_ms_per_trial": small["overhead_ms_per_trial"],
        "tune_default_val_macro_f1": default,
        "tune_best_val_macro_f1": short["best_val_macro_f1"],
        "tune_searches": {"digits_p1": serial, "digits_p2": parallel, "penguins_p1": small, "penguins_short_p1": short},
        "tune_mlflow_parent_runs": len(parents),  # in the penguins store: one per search
        "tune_mlflow_child_runs": len(children),
        "tune_load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
