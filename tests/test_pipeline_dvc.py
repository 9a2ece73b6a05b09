"""The whole DVC pipeline, for real: `dvc repro` on a small real image folder in a temp project."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from components.io import load_arrays
from conftest import REPO

STAGES = ["clean", "normalise", "augment", "train", "evaluate", "register"]
METRIC_KEYS = {
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "n_test",
}


def test_first_repro_runs_every_stage_in_pipeline_order(trained):
    assert trained.first_run_stages == STAGES
    lock = yaml.safe_load((trained.root / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    # Each stage consumes what the one before it produced.
    deps = {name: {d["path"] for d in stage.get("deps", [])} for name, stage in lock["stages"].items()}
    assert "outputs/clean" in deps["normalise"]
    assert {"outputs/split", "outputs/preprocess"} <= deps["augment"]
    assert "outputs/augmented/train.npz" in deps["train"]
    assert "outputs/model.pt" in deps["evaluate"]
    assert {"reports/metrics.json", "reports/predictions.csv"} <= deps["register"]
    assert trained.run("dvc", "status", "--json").stdout.strip() == "{}"


def test_metrics_json_equals_scikit_learn_on_the_test_predictions(trained):
    metrics = trained.json("reports/metrics.json")
    assert set(metrics) == METRIC_KEYS
    predictions = pd.read_csv(trained.root / "reports/predictions.csv", dtype=str)
    test = load_arrays(trained.root / "outputs/split/test.npz")
    classes = test["classes"].tolist()
    # predictions.csv lists the test split in order, with its true labels
    assert predictions["actual"].tolist() == [classes[i] for i in test["y"]]
    y_true, y_pred = predictions["actual"], predictions["predicted"]
    assert metrics["n_test"] == len(test["y"]) == 120
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", labels=classes))
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=classes, average="weighted", zero_division=0)
    assert [metrics[f"weighted_{k}"] for k in ("precision", "recall", "f1")] == pytest.approx(weighted[:3])
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    assert metrics["macro_precision"] == pytest.approx(precision.mean())
    assert metrics["macro_recall"] == pytest.approx(recall.mean())
    per_class = trained.json("reports/plots/per_class.json")  # a bar chart in dvc plots, not 40 metrics
    assert [row["class"] for row in per_class] == classes
    for i, row in enumerate(per_class):
        assert row == pytest.approx(
            {"class": classes[i], "precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert metrics["macro_f1"] >= 0.9, "the small config should still learn digits"
    # the dvc plots confusion data is the same predictions, one record per test image
    records = trained.json("reports/plots/confusion_matrix.json")
    assert [(r["actual"], r["predicted"]) for r in records] == list(zip(y_true, y_pred, strict=True))
    for picture in ("confusion_matrix.png", "precision_recall.png"):
        assert (trained.root / "reports/plots" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ...and the same pictures are in the MLflow run, beside the test metrics
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trained.env["MLFLOW_TRACKING_URI"])
    run_id = client.get_model_version("digits-classifier", trained.json("reports/registration.json")["version"]).run_id
    assert {a.path for a in client.list_artifacts(run_id, "plots")} >= {
        "plots/confusion_matrix.png",
        "plots/precision_recall.png",
        "plots/confusion_matrix.json",
    }
    assert client.get_run(run_id).data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])


def test_the_mlflow_run_holds_everything_a_person_browses_for(trained):
    import mlflow

    mlflow.set_tracking_uri(trained.env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    registration = trained.json("reports/registration.json")
    run = client.get_run(client.get_model_version("digits-classifier", registration["version"]).run_id)
    assert run.info.status == "FINISHED"
    timing = trained.json("outputs/timing/train.json")  # clock times: beside DVC's outputs, not among them
    assert run.info.start_time == timing["started_ms"], "dated from training"
    assert run.info.run_name == "dvc-" + run.data.tags["params_hash"][:8], "no git here: engine + params digest"
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    # flattened params, exactly as params.yaml says
    params = yaml.safe_load((trained.root / "params.yaml").read_text())
    assert run.data.params["train.epochs"] == str(params["train"]["epochs"]) == "8"
    assert run.data.params["augment.scale"] == str(params["augment"]["scale"])
    assert run.data.params["seed"] == "42" and "kubeflow.image" not in run.data.params
    assert run.data.tags["register.min_macro_f1"] == "0.9"
    # per-epoch curves: one point per epoch, equal to the history DVC plots
    history = pd.read_csv(trained.root / "reports/plots/training.csv")
    for key in ("train_loss", "val_loss", "val_macro_f1"):
        points = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in points] == history["epoch"].tolist()
        assert [m.value for m in points] == pytest.approx(history[key].tolist())
        assert [m.timestamp for m in points] == timing["epoch_end_ms"]
    assert "time_ms" not in history, "a tracked file holds no clock time"
    # final test metrics: the same numbers as metrics.json, per-class F1 included
    metrics = trained.json("reports/metrics.json")
    for key in (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
    ):
        assert run.data.metrics[f"test_{key}"] == pytest.approx(metrics[key]), key
    for row in trained.json("reports/plots/per_class.json"):
        assert run.data.metrics[f"test_f1_class_{row['class']}"] == pytest.approx(row["f1"])
    # lineage tags
    tags = run.data.tags
    assert tags["engine"] == "dvc" and tags["device"] == "cpu"
    assert tags["dvc_data_md5"] == yaml.safe_load((trained.root / "data.dvc").read_text())["outs"][0]["md5"]
    assert tags["git_commit"] == "unknown" and tags["git_dirty"] == "false"  # the temp project is not in git
    # what the model is: its weights, the split it saw, its params; the same on the version
    from components.io import files_digest
    from components.model import weights_hash

    assert tags["weights_hash"] == weights_hash(trained.root / "outputs/model.pt") == registration["weights_hash"]
    splits = [trained.root / f"outputs/split/{part}.npz" for part in ("train", "val", "test")]
    assert tags["data_hash"] == files_digest(splits).hexdigest()
    logged = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/params.yaml"))
    assert logged["train"] == params["train"] and logged["register"]["min_macro_f1"] == 0.9
    # artifacts: pictures, the confusion matrix as JSON, the clean report
    artifacts = {a.path for folder in ("plots", "reports") for a in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts >= {
        "plots/confusion_matrix.png",
        "plots/precision_recall.png",
        "plots/confusion_matrix.json",
        "plots/confusion_matrix_table.json",
        "plots/training.csv",
        "reports/clean.json",
        "plots/per_class.json",
        "reports/split.json",
        "reports/metrics.json",
        "reports/registration.json",
    }
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/plots/confusion_matrix_table.json")
    matrix = np.array(table["rows_actual_columns_predicted"])
    assert matrix.sum() == metrics["n_test"] and np.trace(matrix) / matrix.sum() == pytest.approx(metrics["accuracy"])
    logged_clean = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/reports/clean.json")
    assert logged_clean == trained.json("reports/clean.json")
    # the model: signature, input example and pinned requirements; the version links back to this run
    version = client.get_model_version("digits-classifier", registration["version"])
    assert {k: version.tags[k] for k in ("weights_hash", "data_hash", "params_hash", "model_key")} == {
        k: tags[k] for k in ("weights_hash", "data_hash", "params_hash", "model_key")
    }
    info = mlflow.models.get_model_info(f"models:/digits-classifier/{registration['version']}")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 8, 8, 1)
    assert info.saved_input_example_info is not None
    requirements = mlflow.pyfunc.get_model_dependencies(f"models:/digits-classifier/{registration['version']}")
    pins = Path(requirements).read_text().split()
    assert any(line.startswith("torch==") for line in pins) and any(line.startswith("mlflow==") for line in pins)
    assert not [line for line in pins if line.startswith("kfp")], "serving needs no Kubeflow"


def test_normaliser_is_fitted_on_the_train_split_only(trained):
    stats = trained.json("outputs/preprocess/normaliser.json")
    split = {name: load_arrays(trained.root / f"outputs/split/{name}.npz") for name in ("train", "val", "test")}
    train_pixels = split["train"]["raw"] / 255.0
    assert stats["mean"] == pytest.approx([train_pixels.mean()], abs=1e-9)
    assert stats["std"] == pytest.approx([train_pixels.std()], abs=1e-9)
    everything = np.concatenate([s["raw"] for s in split.values()]) / 255.0
    assert abs(stats["mean"][0] - everything.mean()) > 1e-6, "stats must not include val/test pixels"
    # ...and the same train statistics are applied to every split
    for part in split.values():
        expected = (part["raw"].astype(np.float32) / 255 - stats["mean"][0]) / stats["std"][0]
        np.testing.assert_allclose(part["x"][:, 0], expected[..., 0], rtol=1e-5, atol=1e-5)
    # stratified and disjoint
    paths = [set(part["ids"].tolist()) for part in split.values()]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    for part in split.values():
        assert len(set(np.bincount(part["y"]).tolist())) == 1, "60 per class splits evenly per class"


def test_augmentation_touches_only_the_train_split(trained):
    clean = load_arrays(trained.root / "outputs/clean/images.npz")
    by_path = dict(zip(clean["ids"].tolist(), clean["images"], strict=True))
    split = {name: load_arrays(trained.root / f"outputs/split/{name}.npz") for name in ("train", "val", "test")}
    for name in ("val", "test"):  # val/test are exactly the cleaned images
        expected = np.stack([by_path[p] for p in split[name]["ids"].tolist()])
        np.testing.assert_array_equal(split[name]["raw"], expected)
    augmented = load_arrays(trained.root / "outputs/augmented/train.npz")
    n = len(split["train"]["y"])
    assert len(augmented["y"]) == 2 * n  # originals + copies: 1
    np.testing.assert_array_equal(augmented["x"][:n], split["train"]["x"])
    np.testing.assert_array_equal(augmented["y"][n:], split["train"]["y"])
    changed = np.abs(augmented["x"][n:] - augmented["x"][:n]).mean(axis=(1, 2, 3))
    assert (changed > 0.01).mean() > 0.95, "nearly every copy is transformed"


def test_registered_champion_predicts_raw_pixels_in_a_fresh_process(trained):
    registration = trained.json("reports/registration.json")
    assert registration["promoted"] is True and registration["version"] == "1"
    assert registration["candidate_macro_f1"] == pytest.approx(trained.json("reports/metrics.json")["macro_f1"])
    script = textwrap.dedent("""
        import sys, mlflow, numpy as np
        model = mlflow.pyfunc.load_model("models:/digits-classifier@champion")
        raw = np.load("outputs/split/test.npz")["raw"].astype(np.float32)
        out = model.predict(raw)
        out.to_csv(sys.stdout, index=False)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=trained.root / "outputs" / "..",
        env=trained.env,
        capture_output=True,
        text=True,
        check=True,
    )
    from io import StringIO

    served = pd.read_csv(StringIO(result.stdout), dtype={"label": str})
    expected = pd.read_csv(trained.root / "reports/predictions.csv", dtype=str)
    assert served["label"].tolist() == expected["predicted"].tolist()
    probabilities = served.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_caching_and_the_champion_rule_through_repro(trained):
    """Runs last in this module: it changes params of the shared project."""
    import mlflow
    from mlflow import MlflowClient

    assert trained.repro() == [], "nothing changed, nothing reruns"
    first = (trained.root / "reports/registration.json").read_bytes()

    # The champion's own model registered again is the same version, with the decision made for it then.
    assert trained.repro("--force", "--single-item", "register") == ["register"]
    assert (trained.root / "reports/registration.json").read_bytes() == first

    # A train parameter reruns train, evaluate and register only; the decision follows the CI.
    trained.set_params({"train": {"lr": 0.002}})
    assert trained.repro() == ["train", "evaluate", "register"]
    retrained = trained.json("reports/registration.json")
    assert retrained["version"] == "2" and retrained["champion_version_before"] == "1"
    assert retrained["ci_low"] <= retrained["ci_high"]
    assert retrained["promoted"] == (retrained["ci_low"] > 0)

    # Raising the threshold does not re-decide a model registered before: its version and decision stand.
    trained.set_params({"register": {"min_macro_f1": 0.9999}})
    assert trained.repro() == ["register"]
    assert trained.json("reports/registration.json") == retrained
    # A new model is judged by it: refused on (a), champion unchanged.
    trained.set_params({"train": {"lr": 0.0025}})
    assert trained.repro() == ["train", "evaluate", "register"]
    below = trained.json("reports/registration.json")
    assert below["version"] == "3" and below["promoted"] is False and "below register.min_macro_f1" in below["reason"]

    mlflow.set_tracking_uri(trained.env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    versions = client.search_model_versions("name='digits-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    champion = client.get_model_version_by_alias("digits-classifier", "champion")
    assert str(champion.version) == ("2" if retrained["promoted"] else "1")
    assert champion.tags["dvc_data_md5"].endswith(".dir") and champion.tags["engine"] == "dvc"
    # every registration is its own finished run, and each version links back to it
    run_ids = {str(v.version): v.run_id for v in versions}
    assert len(set(run_ids.values())) == 3
    for version, run_id in run_ids.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["registered_version"] == version
        assert run.data.tags["model_key"] == client.get_model_version("digits-classifier", version).tags["model_key"]

    # The champion is re-scored from its registered weights and preprocessing, loaded as data and scored by
    # today's code, on today's test split: the same score evaluate gave those weights.
    trained.set_params({"register": {"min_macro_f1": 0.0}, "train": {"lr": 0.0035}})  # so the champion is scored
    assert trained.repro() == ["train", "evaluate", "register"]
    rescored = trained.json("reports/registration.json")
    assert rescored["version"] == "4"
    champion_f1 = (retrained if retrained["promoted"] else json.loads(first))["candidate_macro_f1"]
    assert rescored["champion_macro_f1"] == pytest.approx(champion_f1) and champion_f1 > 0.9


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is needed to fetch vega for offline plots")
def test_dvc_plots_render_offline_with_the_inlined_template(trained):
    subprocess.run(["make", "-C", str(REPO), "build/plots-template.html"], check=True, capture_output=True)
    out = trained.root / "plots-html"
    trained.run("dvc", "plots", "show", "--html-template", str(REPO / "build/plots-template.html"), "-o", str(out))
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and '<script src="http' not in page
    assert "vegaEmbed('#reports_plots_confusion_matrix_json'" in page
    assert "vegaEmbed('#reports_plots_training_csv'" in page
    assert '"actual"' in page and '"val_macro_f1"' in page
    assert (out / "static" / "workspace_reports_plots_confusion_matrix.png").exists()
