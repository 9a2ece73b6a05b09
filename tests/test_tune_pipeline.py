"""The Kubeflow tuning pipeline (pipelines/tune_pipeline.py), run with kfp.local on the penguins table: three
trials fanned out by dsl.ParallelFor (two at a time), one refused by the schema; the best one is evaluated and
registered in a real MLflow sqlite store. Its compiled spec carries tune.parallelism."""

import json
import os
import subprocess
import sys

import mlflow
import yaml

from conftest import PENGUINS, REPO

TUNE = {
    "space": {
        "train.lr": {"loguniform": [0.00001, 0.05]},
        "train.batch_size": {"choice": [16, 30]},
        "train.micro_batch_size": {"choice": [8, 16]},
    },
    "n_trials": 3,
    "parallelism": 2,
    "seed": 0,  # trial 0: batch 30 with micro-batches of 8 (refused); trials 1 and 2: lr 0.02 and 0.0013
}


def test_kfp_local_tuning_run_registers_the_best_trial(tmp_path):
    from components.sample_data import export_penguins

    export_penguins(tmp_path / PENGUINS)
    params = yaml.safe_load((REPO / "examples/penguins/params.yaml").read_text())
    params["train"].update(epochs=3, patience=3)
    params["register"].update(bootstrap_resamples=100, min_macro_f1=0.5)
    params["tune"] = TUNE
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.run_local", "--tune", "--params", "params.yaml"]
        + ["--data-uri", str(tmp_path / PENGUINS), "--output-dir", str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    best = json.loads((out / "best.json").read_text())
    trials = {int(t["trial"]): t for t in best["trials"]}
    assert sorted(trials) == [0, 1, 2]
    assert "micro_batch_size 8 must divide train.batch_size 30" in trials[0]["error"] and trials[0]["score"] == -1
    scores = {n: t["score"] for n, t in trials.items() if not t["error"]}
    assert len(scores) == 2 and all(0 < s <= 1 for s in scores.values())
    assert int(best["best"]["trial"]) == max(sorted(scores), key=lambda n: scores[n])

    registration = json.loads((out / "registration.json").read_text())
    assert registration["weights_hash"] == best["best"]["weights_hash"], "the best trial's model was registered"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    run = client.get_run(client.get_model_version("penguins-classifier", registration["version"]).run_id)
    assert float(run.data.params["train.lr"]) == best["best"]["values"]["train.lr"], "register logs its params"


def test_the_compiled_tuning_spec_fans_out_tune_parallelism_trials(tmp_path):
    params = yaml.safe_load((REPO / "examples/penguins/params.yaml").read_text())
    params["tune"] = dict(TUNE, parallelism=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "tune.yaml"
    subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--pipeline", "tune", "--params", str(tmp_path / "params.yaml")]
        + ["--output", str(out), "--image", "r.test/t:1"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    spec, _ = yaml.safe_load_all(out.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["for-loop-1"]["iteratorPolicy"]["parallelismLimit"] == 3
    assert tasks["for-loop-1"]["parameterIterator"]["items"]["inputParameter"].endswith("sample-trials-step-Output")
    assert tasks["register-step"]["inputs"]["parameters"]["train"]["taskOutputParameter"] == {
        "outputParameterKey": "train",
        "producerTask": "pick-best-step",
    }, "register logs the best trial's train section"


def test_an_empty_space_is_refused_when_compiling_not_run_as_identical_trials(tmp_path):
    params = yaml.safe_load((REPO / "examples/penguins/params.yaml").read_text())
    params["tune"] = dict(TUNE, space={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--pipeline", "tune", "--params", str(tmp_path / "params.yaml")]
        + ["--output", str(tmp_path / "tune.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "tune.space is empty" in result.stderr, result.stderr
    assert not (tmp_path / "tune.yaml").exists()
