"""The batch-scoring pipeline (pipelines/score.py): fetch -> predict, compiled and run with kfp.local on a model
registered in a temporary MLflow store; its predictions are components.predict's."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.params import load_params
from conftest import REPO


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("compiled") / "score.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.compile",
            "--pipeline",
            "score",
            "--output",
            str(out),
            "--image",
            "r.test/t:1",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform


def test_the_compiled_spec_takes_data_and_a_model_and_gives_a_dataset(compiled):
    spec, platform = compiled
    params = load_params(REPO / "params.yaml")
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == {"data_uri", "dvc_repo", "dvc_rev", "dvc_path", "model_uri", "output_format"}
    assert inputs["model_uri"]["defaultValue"] == f"models:/{params.register.model_name}@champion"
    assert inputs["dvc_path"]["defaultValue"] == params.data.path
    assert inputs["output_format"]["defaultValue"] == "csv"
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert [artifact["artifactType"]["schemaTitle"] for artifact in outputs.values()] == ["system.Dataset"]

    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["fetch-step", "predict-step"]
    assert tasks["fetch-step"]["inputs"]["parameters"]["data_root"]["runtimeValue"]["constant"] == (
        params.kubeflow.data_root
    ), "fetch's data root is fixed when compiling, not a run parameter"
    assert tasks["predict-step"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"] == {
        "outputArtifactKey": "raw",
        "producerTask": "fetch-step",
    }
    assert tasks["predict-step"].get("cachingOptions", {}).get("enableCache", False) is False, "@champion moves"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"] == "r.test/t:1", name
        assert executor["container"]["resources"].get("memoryLimit"), name

    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    envs = {
        e["envVar"]: (s["secretName"], s.get("optional", False))
        for s in k8s["exec-predict-step"]["secretAsEnv"]
        for e in s["keyToEnv"]
    }
    secret = params.kubeflow.mlflow_secret
    assert envs == {
        "MLFLOW_TRACKING_URI": (secret, False),
        "MLFLOW_TRACKING_USERNAME": (secret, True),
        "MLFLOW_TRACKING_PASSWORD": (secret, True),
    }
    assert "exec-fetch-step" not in k8s, "fetch gets no MLflow credentials"


def score_locally(project, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["-m", "pipelines.run_local", "--score", "--params", str(project.root / "params.yaml")]
    return subprocess.run(
        [sys.executable, *args, "--data-uri", str(data), "--output-dir", str(out), *extra],
        cwd=REPO,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_kfp_local_run_gives_what_components_predict_gives(trained, tmp_path, monkeypatch):
    from components import tracking
    from components.predict import predict

    images = tmp_path / "new-images"
    images.mkdir()
    for folder in sorted((trained.root / "data" / "digits").iterdir())[:8]:
        first = min(folder.glob("*.png"))
        shutil.copy(first, images / f"{folder.name}_{first.name}")

    result = score_locally(trained, images, tmp_path / "kfp")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours = pd.read_csv(tmp_path / "kfp" / "predictions.csv")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.env["MLFLOW_TRACKING_URI"])
    tracking.configure(create=False)  # conftest's mlflow_uris_restored puts MLflow's URIs back
    expected = predict("models:/digits-classifier@champion", images, tmp_path / "direct.csv")
    assert len(ours) == len(expected) == 8
    assert list(ours.columns) == list(expected.columns)
    # ids are paths: the fetched copies' in the pipeline, the originals here, the same files in the same order
    assert [Path(i).name for i in ours["id"]] == [Path(i).name for i in expected["id"]]
    assert ours["label"].astype(str).tolist() == expected["label"].astype(str).tolist()
    probs = [c for c in expected.columns if c.startswith("prob_")]
    assert abs(ours[probs].to_numpy() - expected[probs].to_numpy()).max() <= 1e-6


def test_a_bad_model_uri_fails_the_run_with_one_line(trained, tmp_path):
    images = tmp_path / "new-images"
    images.mkdir()
    shutil.copy(min((trained.root / "data" / "digits" / "0").glob("*.png")), images)
    result = score_locally(trained, images, tmp_path / "kfp", "--model", "models:/no-such-model@champion")
    assert result.returncode == 1
    task_lines = [line.strip() for line in result.stdout.splitlines() if "error: models:/" in line]
    assert task_lines == [
        f"error: models:/no-such-model@champion: not found in {trained.env['MLFLOW_TRACKING_URI']} "
        "(Registered Model with name=no-such-model not found)"
    ], result.stdout[-3000:]
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the batch-scoring run failed: the failed task's error is in its output above"
    )
    assert not (tmp_path / "kfp" / "predictions.csv").exists()
