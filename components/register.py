"""register: log the model (preprocessing included) as a new version; move `champion` only to a better model.

Promotion rule: macro-F1 >= register.min_macro_f1, and, when a champion exists, the champion is
re-scored on the *current* test split and the candidate must beat it: with
register.require_significance, the lower bound of a paired-bootstrap confidence interval on the
macro-F1 difference (candidate - champion) must be above 0.

    python -m components.register --model outputs/model.pt --preprocess outputs/preprocess \
        --split outputs/split --predictions reports/predictions.csv \
        --metrics reports/metrics.json --run-info outputs/train_run.json --out reports/registration.json
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.errors import run_cli
from components.io import load_arrays, read_json, write_json
from components.normalise import load_raw
from components.params import Register, load_params

log = logging.getLogger(__name__)
ALIAS = "champion"


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def paired_bootstrap(y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray, n_classes: int,
                     resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Confidence interval of macro-F1(candidate) - macro-F1(champion), resampling test examples in pairs."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, len(y_true), len(y_true))
        diffs[b] = macro_f1(y_true[idx], candidate[idx], n_classes) - macro_f1(y_true[idx], champion[idx], n_classes)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


def decide(y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray | None, n_classes: int,
           cfg: Register, seed: int, champion_problem: str = "") -> dict:
    """The promotion decision with its numbers; champion=None when there is no champion yet, or, with
    champion_problem, when the champion cannot score this test split (never promote blindly then)."""
    cand_f1 = macro_f1(y_true, candidate, n_classes)
    decision = {"promoted": False, "candidate_macro_f1": cand_f1, "champion_macro_f1": None,
                "ci_low": None, "ci_high": None}
    if cand_f1 < cfg.min_macro_f1:
        return decision | {"reason": f"macro_f1 {cand_f1:.4f} is below register.min_macro_f1 {cfg.min_macro_f1}"}
    if champion_problem:
        return decision | {"reason": f"the champion cannot score this test split ({champion_problem}); not promoted. "
                                     "If the input format changed on purpose, move the alias by hand"}
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
    return decision | {"promoted": better,
                       "reason": f"macro_f1 {cand_f1:.4f} {verdict} champion's {champ_f1:.4f} on this test split; {ci}"}


def champion_predictions(client, name: str, raw, classes: list[str]) -> tuple[str | None, np.ndarray | None, str]:
    """(version, predicted class indices, problem) of the current champion re-scored on this test split;
    (None, None, "") without a champion, (version, None, why) when it cannot score this input."""
    import mlflow
    try:
        version = str(client.get_model_version_by_alias(name, ALIAS).version)
    except mlflow.exceptions.MlflowException:
        return None, None, ""
    try:
        from components.serving import score_registered_model
        labels = score_registered_model(f"models:/{name}/{version}", raw)["label"].astype(str).tolist()
    except RuntimeError as exc:      # e.g. the input format changed since the champion was trained
        return version, None, str(exc)[:200]
    index = {c: i for i, c in enumerate(classes)}
    return version, np.array([index.get(label, -1) for label in labels]), ""


def register_files(cfg: Register, seed: int, model_path: Path, preprocess_dir: Path, split_dir: Path,
                   predictions_path: Path, metrics_path: Path, run_info_path: Path, out: Path,
                   engine: str = "dvc") -> dict:
    """Log and register the model, apply the champion rule, write registration.json; returns its content."""
    from components import serving, tracking
    import mlflow
    from mlflow.models import infer_signature

    test = load_arrays(split_dir / "test.npz")
    classes = test["classes"].tolist()
    index = {c: i for i, c in enumerate(classes)}
    # keep_default_na=False: a class called "NA" or "None" is a label, not a missing value
    predicted = pd.read_csv(predictions_path, dtype=str, keep_default_na=False)["predicted"]
    candidate = np.array([index[c] for c in predicted])
    metrics, run_info = read_json(metrics_path), read_json(run_info_path)
    raw = load_raw(split_dir, "test")
    meta = read_json(preprocess_dir / "meta.json")

    tracking.configure()
    client = mlflow.MlflowClient()
    champion_version, champion, problem = champion_predictions(client, cfg.model_name, raw, classes)
    decision = decide(test["y"], candidate, champion, len(classes), cfg, seed, champion_problem=problem)

    example = raw[:2]       # >= 2 rows so nothing freezes the batch size at 1
    example_output = serving.predictions_frame(np.full((2, len(classes)), 1 / len(classes), np.float32), classes)
    with tracking.resume_run(run_info["run_id"]) as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=serving.__file__,
            artifacts={"model": str(model_path), "preprocess": str(preprocess_dir)},
            metadata={key: meta[key] for key in ("kind", "classes", "image_size", "channels", "target")},
            code_paths=[str(Path(serving.__file__).parent)],
            signature=infer_signature(example, example_output), input_example=example,
            pip_requirements=serving.pinned_requirements(), registered_model_name=cfg.model_name)
        version = str(info.registered_model_version)
        tags = tracking.lineage_tags(run_info["device"], engine) | {
            f"test_{k}": f"{metrics[k]:.6f}" for k in ("macro_f1", "accuracy", "macro_precision", "macro_recall")}
        for key, value in tags.items():
            client.set_model_version_tag(cfg.model_name, version, key, value)
        client.set_model_version_tag(cfg.model_name, version, "promotion", decision["reason"])
        if decision["promoted"]:
            client.set_registered_model_alias(cfg.model_name, ALIAS, version)
        registration = decision | {"version": version, "model_name": cfg.model_name,
                                   "champion_version_before": champion_version, "run_id": run.info.run_id}
        mlflow.log_dict(registration, "reports/registration.json")
        mlflow.set_tags({"registered_version": version} | tracking.flatten("register", cfg.model_dump(mode="json")))

    write_json(out, registration)
    log.info("%s version %s: %s", cfg.model_name, version,
             ("promoted to @champion - " if decision["promoted"] else "not promoted - ") + decision["reason"])
    return registration


def summary_markdown(registration: dict) -> str:
    """A short report for the Kubeflow UI."""
    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    rows = [("model", f"{registration['model_name']} v{registration['version']}"),
            ("promoted to @champion", "yes" if registration["promoted"] else "no"),
            ("candidate macro-F1", fmt(registration["candidate_macro_f1"])),
            ("champion macro-F1 (same test split)", fmt(registration["champion_macro_f1"])),
            ("CI of the difference", f"[{fmt(registration['ci_low'])}, {fmt(registration['ci_high'])}]")]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"## Registration\n\n| | |\n|---|---|\n{table}\n\n{registration['reason']}\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Register the model; promote it to champion if it earns it.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--preprocess", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="normalise's output folder")
    parser.add_argument("--predictions", type=Path, required=True, help="evaluate's test predictions")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--run-info", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    register_files(params.register, params.seed, args.model, args.preprocess, args.split, args.predictions,
                   args.metrics, args.run_info, args.out)


def register_step(model: Input[Model], preprocess: Input[Artifact], splits: Input[Dataset],
                  predictions: Input[Dataset], metrics_json: Input[Artifact], run_info: Input[Artifact], seed: int,
                  register: dict, registration: Output[Artifact], report: Output[Markdown]):
    """Kubeflow: never cached, since it reads and moves the registry's champion."""
    from pathlib import Path
    from components.params import Register
    from components.register import register_files, summary_markdown
    result = register_files(Register.model_validate(register), seed, Path(model.path), Path(preprocess.path),
                            Path(splits.path), Path(predictions.path), Path(metrics_json.path),
                            Path(run_info.path), Path(registration.path), engine="kubeflow")
    Path(report.path).write_text(summary_markdown(result))


if __name__ == "__main__":
    run_cli(main)
