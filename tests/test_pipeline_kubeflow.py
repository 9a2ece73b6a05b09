"""The same components as a Kubeflow pipeline: compiled spec, a real kfp.local run, fetch, and submit.

No Kubeflow API server can exist here: the submit test talks to a small local HTTP server that
stands in for it and records what the real kfp.Client uploads.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from components.fetch import fetch
from components.params import load_params
from conftest import REPO, make_project

STEPS = ["fetch-step", "clean-step", "normalise-step", "augment-step", "train-step", "evaluate-step", "register-step"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--output", str(out), "--image", "registry.test/dm:1"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    spec, platform = yaml.safe_load_all(out.read_text())  # pipeline spec, then kubernetes platform spec
    return spec, platform


def test_an_image_override_that_is_no_image_reference_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "pipeline.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--output", str(out), "--image", "not an image!!"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "error: --image: 'not an image!!' is not a container image reference; write REGISTRY/NAME:TAG or "
        "REGISTRY/NAME@sha256:DIGEST (lower-case name)"
    )
    assert not out.exists()


def test_compiled_spec_requests_gpu_for_train_and_limits_every_task(compiled):
    spec, platform = compiled
    params = load_params(REPO / "params.yaml")
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(spec["root"]["dag"]["tasks"]) == sorted([*STEPS, "condition-1"])  # deploy's, tested below
    assert sorted(executors) == sorted(f"exec-{step}" for step in [*STEPS, "deploy-step"])
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == "registry.test/dm:1", name
        resources = container["resources"]
        for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
            assert resources.get(key), f"{name} has no {key}"
        assert "pip install" not in " ".join(container["command"]), "the image has the code: nothing installed at start"
    train = executors["exec-train-step"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(train["accelerator"]["resourceCount"]) == params.train.gpus
    assert "accelerator" not in executors["exec-clean-step"]["container"]["resources"]
    assert train["cpuLimit"] == float(params.kubeflow.train_resources.cpu_limit)

    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["register-step"].get("cachingOptions", {}).get("enableCache", False) is False
    assert tasks["train-step"]["retryPolicy"]["maxRetryCount"] == params.kubeflow.train_retries
    assert tasks["train-step"]["inputs"]["parameters"]["checkpoint_dir"]["runtimeValue"]["constant"] == "", (
        "no checkpoint volume unless kubeflow.checkpoint_pvc names one"
    )
    # fetch's data root is fixed at compile time, not a run parameter anyone starting a run could widen.
    assert (
        tasks["fetch-step"]["inputs"]["parameters"]["data_root"]["runtimeValue"]["constant"]
        == params.kubeflow.data_root
    )
    for step in ("fetch-step", "clean-step", "normalise-step", "augment-step"):
        assert tasks[step]["cachingOptions"]["enableCache"] is True, step

    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    envs = {
        e["envVar"]: (s["secretName"], s.get("optional", False))
        for s in k8s["exec-register-step"]["secretAsEnv"]
        for e in s["keyToEnv"]
    }
    assert envs["MLFLOW_TRACKING_URI"] == ("mlflow-credentials", False)
    assert envs["MLFLOW_TRACKING_PASSWORD"] == ("mlflow-credentials", True)
    for step in ("train-step", "evaluate-step"):  # only register talks to MLflow: no credentials elsewhere
        assert "secretAsEnv" not in k8s.get(f"exec-{step}", {}), step
    assert k8s["exec-train-step"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "exec-clean-step" not in k8s, "data tasks get no secrets and no GPU scheduling"


def test_deploy_runs_only_for_a_promoted_version_without_mlflow_credentials(compiled):
    """deploy sits under two conditions, the run parameter `deploy` and register's `promoted` output; it gets
    register's `version` output, the serve section, and the image and Secret name fixed when compiling."""
    spec, platform = compiled
    params = load_params(REPO / "params.yaml")
    outer = spec["root"]["dag"]["tasks"]["condition-1"]
    assert outer["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--deploy'] == true"
    inner = spec["components"][outer["componentRef"]["name"]]["dag"]["tasks"]["condition-2"]
    assert inner["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--register-step-promoted'] == true"
    )
    assert outer["dependentTasks"] == ["register-step"]
    deploy = spec["components"][inner["componentRef"]["name"]]["dag"]["tasks"]["deploy-step"]
    inputs = deploy["inputs"]["parameters"]
    assert inputs["version"] == {"componentInputParameter": "pipelinechannel--register-step-version"}
    assert inputs["serve"] == {"componentInputParameter": "pipelinechannel--serve"}
    assert inputs["image"]["runtimeValue"]["constant"] == "registry.test/dm:1"
    assert inputs["mlflow_secret"]["runtimeValue"]["constant"] == params.kubeflow.mlflow_secret
    assert deploy.get("cachingOptions", {}).get("enableCache", False) is False, "deploy reads the cluster: never cached"
    outputs = spec["components"]["comp-register-step"]["outputDefinitions"]["parameters"]
    assert outputs == {"promoted": {"parameterType": "BOOLEAN"}, "version": {"parameterType": "STRING"}}
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["deploy"]["defaultValue"] is True
    assert root["serve"]["defaultValue"] == params.model_dump(mode="json")["serve"]
    # It talks to the Kubernetes API as the run's service account; the server reads MLflow, not deploy.
    assert "exec-deploy-step" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_pipeline_parameters_default_from_params_yaml_and_carry_no_credentials(compiled):
    spec, _ = compiled
    params = load_params(REPO / "params.yaml").model_dump(mode="json", exclude_none=True)
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["seed"]["defaultValue"] == params["seed"]
    for section in (
        "data",
        "clean",
        "split",
        "normalise",
        "augment",
        "text",
        "train",
        "evaluate",
        "register",
        "mlflow",
    ):
        assert inputs[section]["defaultValue"] == params[section], section
    assert "kubeflow" not in inputs
    assert not [n for n in inputs if any(w in n.upper() for w in ("TRACKING_URI", "PASSWORD", "USERNAME", "TOKEN"))]
    assert inputs["mlflow"]["defaultValue"]["experiment"] == "digits"
    assert not [k for k in inputs["mlflow"]["defaultValue"] if "uri" in k.lower()], "the address comes from a Secret"


def test_fetch_reads_the_data_through_dvc_api_at_a_git_revision(tmp_path):
    """The cluster path: data from a DVC repo at a revision (here this repo at HEAD and its sample remote)."""
    assert (
        fetch(tmp_path / "raw", dvc_repo=str(REPO), dvc_rev="HEAD", dvc_path="data/digits", data_root=str(REPO)) == 1797
    )

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}

    assert digest(tmp_path / "raw") == digest(REPO / "data" / "digits")


def test_fetch_takes_a_single_table_file_from_a_uri(tmp_path):
    source = REPO / "data" / "penguins" / "penguins.csv"
    assert fetch(tmp_path / "raw", uri=str(source), data_root=str(REPO)) == 1
    assert (tmp_path / "raw" / "penguins.csv").read_bytes() == source.read_bytes()
    with pytest.raises(Exception, match="not found; check data_uri"):
        fetch(tmp_path / "other", uri=str(tmp_path / "missing.csv"), data_root=str(tmp_path))
    assert not (tmp_path / "other").exists()


def test_kfp_local_run_matches_the_dvc_run_on_the_same_params(tmp_path):
    """Parity: both engines run the same code on the same config; CPU and a fixed seed give the same model
    (weights hash) and equal metrics."""
    project = make_project(tmp_path / "dvc")
    project.repro()
    dvc_metrics = project.json("reports/metrics.json")

    env = dict(project.env, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'kfp-mlflow' / 'mlflow.db'}")
    out = tmp_path / "kfp-out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.run_local",
            "--params",
            str(project.root / "params.yaml"),
            "--data-uri",
            str(project.root / "data" / "digits"),
            "--output-dir",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kfp_metrics = json.loads((out / "metrics.json").read_text())
    assert kfp_metrics == dvc_metrics
    assert kfp_metrics["macro_f1"] >= 0.9

    registrations = [project.json("reports/registration.json"), json.loads((out / "registration.json").read_text())]
    for registration in registrations:
        assert registration["version"] == "1" and registration["promoted"] is True
    from components.model import weights_hash

    assert (
        registrations[0]["weights_hash"]
        == registrations[1]["weights_hash"]
        == weights_hash(project.root / "outputs/model.pt")
    )
    # The kfp run registered into its own store, tagged as the kubeflow engine.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("digits-classifier", "champion")
    assert version.tags["engine"] == "kubeflow"
    assert client.get_run(version.run_id).data.tags["engine"] == "kubeflow"
    # ...and it is the same model by register's key (weights, data, params), so one store shared by both
    # engines keeps one version: the split's ids name the fetched files as data.path does.
    dvc_store = f"sqlite:///{project.root / 'mlflow' / 'mlflow.db'}"
    dvc_version = mlflow.MlflowClient(tracking_uri=dvc_store, registry_uri=dvc_store).get_model_version(
        "digits-classifier", "1"
    )
    for tag in ("data_hash", "params_hash", "model_key"):
        assert version.tags[tag] == dvc_version.tags[tag], tag


class RecordingKfpApi(BaseHTTPRequestHandler):
    """Stands in for the Kubeflow Pipelines v2beta1 REST API and records every request."""

    requests: list = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, None, {k.lower(): v for k, v in self.headers.items()}))
        self._reply({"experiments": []} if "/experiments" in self.path else {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        else:
            self._reply({"run_id": "run-42", "display_name": body.get("display_name"), "experiment_id": "exp-1"})

    def log_message(self, *args):
        pass


def test_submit_uploads_spec_and_params_to_a_stand_in_kfp_api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_port}"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.submit",
                "--host",
                host,
                "--namespace",
                "team-a",
                "--experiment",
                "exp",
                "--run-name",
                "nightly",
                "--image",
                "registry.test/dm:2",
                "--param",
                "train.epochs=40",
                "--param",
                "train.gpus=2",
                "--param",
                "kubeflow.train_resources.memory_limit=32Gi",
                "--param",
                "kubeflow.checkpoint_pvc=train-checkpoints",
                "--param",
                "dvc_repo=https://git.example/repo.git",
                "--param",
                "dvc_rev=v1.2",
            ],
            cwd=REPO,
            env={**os.environ, "KFP_TOKEN": "t0ken"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{host}/#/runs/details/run-42"

    posts = {
        path.split("?")[0]: (body, headers)
        for method, path, body, headers in RecordingKfpApi.requests
        if method == "POST"
    }
    experiment, _ = posts["/apis/v2beta1/experiments"]
    assert experiment["display_name"] == "exp" and experiment["namespace"] == "team-a"
    run, headers = posts["/apis/v2beta1/runs"]
    assert headers["authorization"] == "Bearer t0ken"
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    spec, platform = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "twinline"
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-register-step"]["secretAsEnv"]
    assert {s["secretName"] for s in secrets} == {"mlflow-credentials"}
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {"registry.test/dm:2"}
    train = spec["deploymentSpec"]["executors"]["exec-train-step"]["container"]["resources"]
    assert train["accelerator"]["resourceCount"] == "2", "compile-time settings follow --param too"
    assert train["resourceMemoryLimit"] == "32Gi"
    [mount] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-step"]["pvcMount"]
    assert mount["mountPath"] == "/checkpoints" and "train-checkpoints" in json.dumps(mount)
    train_inputs = spec["root"]["dag"]["tasks"]["train-step"]["inputs"]["parameters"]
    assert train_inputs["checkpoint_dir"]["runtimeValue"]["constant"] == "/checkpoints"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["train"]["epochs"] == 40
    assert parameters["train"]["lr"] == load_params(REPO / "params.yaml").train.lr
    assert parameters["dvc_repo"] == "https://git.example/repo.git" and parameters["dvc_rev"] == "v1.2"


def test_a_branch_is_pinned_to_its_commit_so_kfp_caching_cannot_serve_stale_data():
    from pipelines.submit import pin_revision

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert pin_revision(str(REPO), "HEAD") == head
    assert pin_revision(str(REPO), head) == head


def test_clean_step_reads_a_fetched_table_whatever_its_file_name(tmp_path):
    from types import SimpleNamespace

    from pipelines.steps import clean_step

    fetch(tmp_path / "raw", uri=str(REPO / "data" / "penguins" / "penguins.csv"), data_root=str(REPO))
    (tmp_path / "raw" / "penguins.csv").rename(tmp_path / "raw" / "new_penguins.csv")
    p = load_params(REPO / "examples" / "penguins" / "params.yaml").model_dump(mode="json", exclude_none=True)
    clean_step(
        SimpleNamespace(path=str(tmp_path / "raw")),
        p["data"],
        p["clean"],
        p["split"],
        SimpleNamespace(path=str(tmp_path / "clean")),
        SimpleNamespace(path=str(tmp_path / "clean.json")),
    )
    assert json.loads((tmp_path / "clean.json").read_text())["n_kept"] == 342


def test_submit_rejects_an_unknown_param_before_contacting_the_server():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.submit", "--host", "http://127.0.0.1:9", "--param", "train.epocs=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "error: --param: train.epocs: unknown key (did you mean 'train.epochs'?); "
        "fix or remove it"
    )


def test_submit_to_an_unreachable_host_is_one_line_saying_what_to_check():
    from servers import free_port

    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.submit", "--host", host],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: Kubeflow Pipelines at {host} is not reachable ([Errno 111] Connection refused); check --host (e.g. "
        "https://HOST/pipeline, or http://localhost:8080 after `kubectl port-forward -n kubeflow "
        "svc/ml-pipeline-ui 8080:80`)"
    ]


def test_submit_help_explains_every_option_and_the_token():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.submit", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    text = " ".join(result.stdout.split())
    for option in (
        "--param KEY=VALUE override one value",
        "--params PARAMS the params file",
        "--run-name RUN_NAME name of the run",
        "$KFP_TOKEN",
    ):
        assert option in text, option
    assert "never a command- line argument" in text or "never a command-line argument" in text
