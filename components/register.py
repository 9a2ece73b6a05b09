"""register: the pipeline execution's MLflow run, a new model version, and `champion` only for a better model.

The only stage that talks to MLflow. It logs what the stages before it wrote (params, lineage tags, per-epoch
curves, test metrics, confusion matrix, precision-recall curves, the most confident test mistakes, clean report)
into one run, logs the model (weights + preprocessing, so it takes raw input) and registers it. A tracking
server that is down or failing costs no training: after bounded retries this stage stops with one line, and
rerunning it resumes the same run.

Promotion rule: macro-F1 >= register.min_macro_f1, and, when a champion exists, the champion is
re-scored on the *current* test split and the candidate must beat it: with
register.require_significance, the lower bound of a paired-bootstrap confidence interval on the
macro-F1 difference (candidate - champion) must be above 0.

Idempotent: a version is keyed by what the model is (tags weights_hash, data_hash, params_hash and their
digest model_key). Registering the same model again - `dvc repro` after params went away and came back,
a forced rerun, the same model from Kubeflow - reuses that version and reports the decision made for it
then, with no new run or version. Nothing it writes for DVC holds a run id or a time.

    python -m components.register --model outputs/model.pt --preprocess outputs/preprocess \
        --split outputs/split --predictions reports/predictions.csv --errors reports/errors.csv \
        --metrics reports/metrics.json --plots reports/plots --train-info outputs/train_info.json \
        --history reports/plots/training.csv --clean-report reports/clean.json --split-report reports/split.json \
        --out reports/registration.json --timing outputs/timing/train.json
"""

import argparse
import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from components.errors import run_cli
from components.io import files_digest, load_arrays, read_json, write_json
from components.normalise import load_raw
from components.params import Params, Register, load_params

log = logging.getLogger(__name__)
ALIAS = "champion"


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def paired_bootstrap(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    n_classes: int,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Confidence interval of macro-F1(candidate) - macro-F1(champion), resampling test examples in pairs."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, len(y_true), len(y_true))
        diffs[b] = macro_f1(y_true[idx], candidate[idx], n_classes) - macro_f1(y_true[idx], champion[idx], n_classes)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


def decide(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    n_classes: int,
    cfg: Register,
    seed: int,
    champion_problem: str = "",
) -> dict:
    """The promotion decision with its numbers; champion=None when there is no champion yet, or, with
    champion_problem, when the champion cannot score this test split (never promote blindly then)."""
    cand_f1 = macro_f1(y_true, candidate, n_classes)
    decision = {
        "promoted": False,
        "candidate_macro_f1": cand_f1,
        "champion_macro_f1": None,
        "ci_low": None,
        "ci_high": None,
    }
    if cand_f1 < cfg.min_macro_f1:
        return decision | {"reason": f"macro_f1 {cand_f1:.4f} is below register.min_macro_f1 {cfg.min_macro_f1}"}
    if champion_problem:
        return decision | {
            "reason": f"the champion cannot score this test split ({champion_problem}); not promoted. "
            "If the input format changed on purpose, move the alias by hand"
        }
    if champion is None:
        return decision | {"promoted": True, "reason": f"first model: macro_f1 {cand_f1:.4f} >= {cfg.min_macro_f1}"}

    champ_f1 = macro_f1(y_true, champion, n_classes)
    low, high = paired_bootstrap(y_true, candidate, champion, n_classes, cfg.bootstrap_resamples, cfg.confidence, seed)
    decision |= {"champion_macro_f1": champ_f1, "ci_low": low, "ci_high": high}
    ci = f"{cfg.confidence:.0%} CI of the difference [{low:+.4f}, {high:+.4f}]"
    if cfg.require_significance:
        better = low > 0
        verdict = "significantly better than" if better else "not significantly better than"
    else:
        better = cand_f1 > champ_f1
        verdict = "better than" if better else "not better than"
    return decision | {
        "promoted": better,
        "reason": f"macro_f1 {cand_f1:.4f} {verdict} champion's {champ_f1:.4f} on this test split; {ci}",
    }


def champion_predictions(client, name: str, raw, classes: list[str]) -> tuple[str | None, np.ndarray | None, str]:
    """(version, predicted class indices, problem) of the current champion re-scored on this test split;
    (None, None, "") without a champion, (version, None, why) when it cannot score this input."""
    import mlflow

    try:
        version = str(client.get_model_version_by_alias(name, ALIAS).version)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None, None, ""
        raise
    from components.scoring import score_registered_model

    try:  # as data, with this project's code: a crafted champion cannot run code in this process
        labels = score_registered_model(f"models:/{name}/{version}", raw)["label"].astype(str).tolist()
    except RuntimeError as exc:  # not plain data, or the input format changed since the champion was trained
        return version, None, str(exc)[:200]
    index = {c: i for i, c in enumerate(classes)}
    return version, np.array([index.get(label, -1) for label in labels]), ""


def active_run_id() -> str:
    """The MLflow run register opened: the functions that log into it are only called inside it."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: register's logging is called outside its run")
    return run.info.run_id


@dataclass
class StageFiles:
    """What the stages before register wrote: the same paths under DVC and inside Kubeflow artifacts."""

    model: Path
    preprocess: Path
    split: Path
    predictions: Path
    errors: Path  # evaluate's most confident mistakes on the test split
    metrics: Path
    plots: Path  # evaluate's confusion_matrix.{png,json}, confusion_matrix_table.json, precision_recall.png
    train_info: Path
    history: Path
    clean_report: Path
    split_report: Path
    timing: Path | None = None  # train's clock times; absent or for other weights: the run is dated now
    augment_report: Path | None = None  # augment's counts per origin and the generator's gate (reports/augment.json)
    augment_plot: Path | None = None  # augment's picture of what it added (reports/plots/augmented.png)

    def identity(self, logged_params: dict) -> dict[str, str]:
        """What the model is, as sha256 hex digests: its weights (config and tensors), the data it was
        trained, validated and tested on (the split files), the params that shaped it, and model_key,
        the digest of the three, which names its model version and its MLflow run."""
        from components.model import weights_hash

        identity = {
            "weights_hash": weights_hash(self.model),
            "data_hash": files_digest([self.split / f"{part}.npz" for part in ("train", "val", "test")]).hexdigest(),
            "params_hash": hashlib.sha256(json.dumps(logged_params, sort_keys=True, default=str).encode()).hexdigest(),
        }
        key = hashlib.sha256(" ".join(identity[k] for k in ("weights_hash", "data_hash", "params_hash")).encode())
        return identity | {"model_key": key.hexdigest()[:32]}

    def clock(self, weights: str) -> dict | None:
        """train's timing file, when it was written for these weights (not for a model DVC restored)."""
        try:
            timing = read_json(self.timing) if self.timing else None
        except (OSError, ValueError):
            return None
        return timing if isinstance(timing, dict) and timing.get("weights_hash") == weights else None


def log_execution(
    files: StageFiles,
    params: Params,
    metrics: dict,
    train_info: dict,
    lineage: dict,
    logged_params: dict,
    clock: dict | None,
) -> None:
    """Everything but the model into the active run. On a resumed run, what is already there is not logged twice.
    clock: train's timing for these weights (per-epoch points at the time each epoch ended), or None (now)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    from components.evaluate import metric_names

    client, run_id = mlflow.MlflowClient(), active_run_id()
    present = set(client.get_run(run_id).data.metrics)
    mlflow.set_tags(lineage)
    mlflow.log_params(logged_params)
    if "train_loss" not in present:
        with open(files.history, newline="") as fh:
            rows = list(csv.DictReader(fh))
        now = int(time.time() * 1000)
        ended = clock.get("epoch_end_ms", []) if clock else []
        ended = ended if len(ended) == len(rows) else [now] * len(rows)
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, float(row[key]), int(at), int(row["epoch"]))
                for row, at in zip(rows, ended, strict=True)
                for key in ("train_loss", "val_loss", "val_macro_f1")
                if key in row
            ],
        )
    augmented = read_json(files.augment_report) if files.augment_report else None
    if "test_macro_f1" not in present:
        per_class = {row["class"]: row for row in read_json(files.plots / "per_class.json")}
        mlflow.log_metrics(
            {f"test_{k}": v for k, v in metrics.items()}
            | {f"test_f1_class_{safe}": per_class[name]["f1"] for name, safe in metric_names(list(per_class)).items()}
            | {
                key: train_info[key]
                for key in ("best_val_macro_f1", "best_val_loss", "epochs_run")
                if key in train_info
            }
            | (augment_metrics(augmented) if augmented else {})
        )
    plots = [
        files.plots / name
        for name in (
            "confusion_matrix.png",
            "confusion_matrix.json",
            "confusion_matrix_table.json",
            "precision_recall.png",
            "per_class.json",
        )
    ] + [files.history]
    plots += [files.augment_plot] if files.augment_plot else []
    reports = [files.metrics, files.predictions, files.errors, files.clean_report, files.split_report]
    reports += [files.augment_report] if files.augment_report else []
    for path, folder in [(path, "plots") for path in plots] + [(path, "reports") for path in reports]:
        mlflow.log_artifact(str(path), artifact_path=folder)
    # every section, as params.yaml holds it: what `python -m pipelines.reproduce` applies to rerun this model
    mlflow.log_dict(params.model_dump(mode="json"), "params.yaml")


def augment_metrics(report: dict) -> dict[str, float]:
    """The run's metrics from augment's report: examples per origin, and the generator's gate scores."""
    metrics = {f"augment_{origin}": float(n) for origin, n in report["counts"].items()}
    gate = report.get("cvae", {}).get("gate") or {}
    for key in ("recon_ratio", "mmd_ratio"):
        if gate.get(key) is not None:
            metrics[f"cvae_{key}"] = float(gate[key])
    if "cvae" in report:
        metrics["cvae_used"] = float(report["cvae"]["used"])
    return metrics


def registered_before(client, name: str, model_key: str) -> dict | None:
    """The registration (decision and version) already made for the model with this key, or None."""
    from components.tracking import filter_value

    versions = client.search_model_versions(
        f"name = {filter_value(name)} and tags.model_key = {filter_value(model_key)}"
    )
    for version in sorted(versions, key=lambda v: int(v.version)):
        if "registration" in version.tags:
            return json.loads(version.tags["registration"])
    return None


def log_and_register_model(files: StageFiles, raw, classes: list[str], model_name: str) -> str:
    """Log the pyfunc model to the active run and register it; a resumed run reuses the version it already made."""
    import mlflow
    from mlflow.models import infer_signature

    from components import kinds, scoring, serving

    client, run_id = mlflow.MlflowClient(), active_run_id()
    from components.tracking import filter_value

    earlier = client.search_model_versions(f"name = {filter_value(model_name)} and run_id = {filter_value(run_id)}")
    if earlier:
        return str(earlier[0].version)
    meta = read_json(files.preprocess / "meta.json")
    example = kinds.get(meta["kind"]).signature_input(raw[:2])  # >= 2 rows so nothing freezes the batch size at 1
    example_output = scoring.predictions_frame(np.full((2, len(classes)), 1 / len(classes), np.float32), classes)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=serving.__file__,
        artifacts={"model": str(files.model), "preprocess": str(files.preprocess)},
        # what batch prediction needs to read new files as the training data were read (every kind's settings)
        metadata={key: meta.get(key) for key in ("kind", "classes", *kinds.serving_settings())},
        code_paths=[str(Path(serving.__file__).parent)],
        signature=infer_signature(example, example_output),
        input_example=example,
        pip_requirements=serving.pinned_requirements(meta.get("kind")),
        registered_model_name=model_name,
    )
    return str(info.registered_model_version)


def register_files(params: Params, files: StageFiles, out: Path, engine: str = "dvc") -> dict:
    """Log the execution's run, register the model, apply the champion rule, write registration.json;
    or, for a model registered before (same model_key), write the registration made then."""
    import mlflow

    from components import tracking

    cfg = params.register
    test = load_arrays(files.split / "test.npz")
    classes = test["classes"].tolist()
    index = {c: i for i, c in enumerate(classes)}
    # keep_default_na=False: a class called "NA" or "None" is a label, not a missing value
    predicted = pd.read_csv(files.predictions, dtype=str, keep_default_na=False)["predicted"]
    candidate = np.array([index[c] for c in predicted])
    metrics, train_info = read_json(files.metrics), read_json(files.train_info)
    raw = load_raw(files.split, "test")
    # register.* goes on the run as tags (it may change between attempts); kubeflow.* and mlflow.* (where and
    # how to log), evaluate.* (how many mistakes errors.csv lists), serve.* (how it is served) and tune.* (a
    # search's space: what it found is in train.*) do not shape the model, and raising mlflow.http_retries must
    # still resume the same run
    unlogged = {"evaluate", "register", "kubeflow", "mlflow", "serve", "tune"}
    logged_params = tracking.flatten("", params.model_dump(mode="json", exclude=unlogged))
    identity = files.identity(logged_params)
    lineage = tracking.lineage_tags(train_info["device"], engine)
    clock = files.clock(identity["weights_hash"])

    tracking.configure(params.mlflow)
    client = mlflow.MlflowClient()
    rerun = (
        "rerun `dvc repro` (only register runs)"
        if engine == "dvc"
        else "rerun the pipeline (KFP reuses the cached tasks; register runs again)"
    )
    on_disk = (
        f"the trained model and test metrics are saved: once the server is fixed, {rerun} to log and register them"
    )
    # The lock covers the whole registration, not only the decision: a second registration of the same model
    # (DVC and Kubeflow at once, parallel `dvc exp run --queue` jobs) then finds the first one's version and
    # reuses it, instead of resuming its unfinished run and making another version.
    with (
        tracking.server_errors(on_disk),
        tracking.champion_lock(cfg.model_name, identity["model_key"], cfg.lock_timeout_s) as lock,
    ):
        earlier = registered_before(client, cfg.model_name, identity["model_key"])
        if earlier is not None:
            write_json(out, earlier)
            log.info(
                "%s version %s is this very model (same weights, data and params): reused, no new version; "
                "its decision stands: %s",
                cfg.model_name,
                earlier["version"],
                earlier["reason"],
            )
            return earlier
        start_ms = clock["started_ms"] if clock else None
        with tracking.start_execution_run(
            params.mlflow.experiment,
            identity["model_key"],
            tracking.run_name(lineage, identity["params_hash"]),
            start_ms,
        ) as run:
            log_execution(files, params, metrics, train_info, lineage, logged_params, clock)
            version = log_and_register_model(files, raw, classes, cfg.model_name)
            tags = (
                lineage
                | identity
                | {
                    f"test_{k}": f"{metrics[k]:.6f}"
                    for k in ("macro_f1", "accuracy", "macro_precision", "macro_recall")
                }
            )
            for key, value in tags.items():
                client.set_model_version_tag(cfg.model_name, version, key, value)

            champion_version, champion, problem = champion_predictions(client, cfg.model_name, raw, classes)
            if champion_version == version:  # an earlier attempt of this registration promoted it already
                registration = json.loads(client.get_model_version(cfg.model_name, version).tags["registration"])
            else:
                decision = decide(
                    test["y"], candidate, champion, len(classes), cfg, params.seed, champion_problem=problem
                )
                # no run id or time: dvc.lock, which git tracks, holds registration.json's md5
                registration = decision | {
                    "version": version,
                    "model_name": cfg.model_name,
                    "champion_version_before": champion_version,
                    "weights_hash": identity["weights_hash"],
                }
                client.set_model_version_tag(cfg.model_name, version, "promotion", decision["reason"])
                lock.check()  # still the holder: nobody else decided meanwhile
                # the whole decision, before the alias moves: a rerun that finds it done reports it as it was
                client.set_model_version_tag(cfg.model_name, version, "registration", json.dumps(registration))
                if decision["promoted"]:
                    client.set_registered_model_alias(cfg.model_name, ALIAS, version)

            mlflow.log_dict(registration, "reports/registration.json")
            mlflow.set_tags(
                {"registered_version": version} | identity | tracking.flatten("register", cfg.model_dump(mode="json"))
            )

    write_json(out, registration)
    log.info(
        "%s version %s (run %s): %s",
        cfg.model_name,
        version,
        run.info.run_id,
        ("promoted to @champion - " if registration["promoted"] else "not promoted - ") + registration["reason"],
    )
    return registration


def summary_markdown(registration: dict) -> str:
    """A short report for the Kubeflow UI."""

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = [
        ("model", f"{registration['model_name']} v{registration['version']}"),
        ("promoted to @champion", "yes" if registration["promoted"] else "no"),
        ("candidate macro-F1", fmt(registration["candidate_macro_f1"])),
        ("champion macro-F1 (same test split)", fmt(registration["champion_macro_f1"])),
        ("CI of the difference", f"[{fmt(registration['ci_low'])}, {fmt(registration['ci_high'])}]"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"## Registration\n\n| | |\n|---|---|\n{table}\n\n{registration['reason']}\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="Log the run to MLflow, register the model, promote it if it earns it."
    )
    parser.add_argument("--params", default="params.yaml")
    for name in (
        "model",
        "preprocess",
        "split",
        "predictions",
        "errors",
        "metrics",
        "plots",
        "train-info",
        "history",
        "clean-report",
        "split-report",
    ):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--timing", type=Path, help="train's clock times, to date the run and its curves")
    parser.add_argument("--augment-report", type=Path, help="augment's report (counts, the generator's gate)")
    parser.add_argument("--augment-plot", type=Path, help="augment's picture of what it added")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    files = StageFiles(
        args.model,
        args.preprocess,
        args.split,
        args.predictions,
        args.errors,
        args.metrics,
        args.plots,
        args.train_info,
        args.history,
        args.clean_report,
        args.split_report,
        args.timing,
        args.augment_report,
        args.augment_plot,
    )
    register_files(load_params(args.params), files, args.out)


if __name__ == "__main__":
    run_cli(main)
