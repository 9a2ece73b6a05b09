"""pipelines/trainjob.py: the multi-node train step as a Kubeflow Trainer TrainJob.

- Every TrainJob the step would create validates against Trainer's own TrainJob CRD, and the runtime it
  names is one Trainer ships (its upstream copy validating against the ClusterTrainingRuntime CRD).
- No Kubernetes API server (and no Trainer controller) can run here: the create/wait/fail tests talk to
  a small local HTTP server that stands in for it (StandInTrainerApi, tests named `stand_in`), reached
  through a kubeconfig by the real `kubeflow` SDK and `kubernetes` client. On create it plays Trainer's
  torch plugin for real: it starts the TrainJob's own node command once per node, as two torchrun agents
  on 127.0.0.1 (--nnodes 2 from PET_NNODES, c10d rendezvous, gloo, one process each), and reports the
  pods and conditions from how they ended. The model they train must equal one process's on the same
  global batch, within the existing DDP test's tolerance.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import yaml
from test_deploy import unknown_fields, write_kubeconfig
from test_train_resume_ddp import state_dict, table_data, train_cli

from components.errors import UserError
from components.io import read_json
from components.params import validate_params
from components.train import checkpoint_path
from conftest import REPO
from pipelines import trainjob as tj
from servers import free_port

SCHEMAS = REPO.parent / "shared" / "schemas"
RUNTIME = Path(__file__).parent / "upstream" / "torch-distributed.runtime.yaml"
NAMESPACE = "twinline-pipelines"
IMAGE = "registry.test/twinline@sha256:" + "cd" * 32
TRAIN = {"epochs": 8, "patience": 8, "lr": 0.03, "hidden": [], "batch_size": 40, "device": "cpu", "gpus": 0}
GROUP = "/apis/trainer.kubeflow.org/v1alpha1"


def params_with(**kubeflow):
    raw = {"seed": 5, "data": {"kind": "tabular", "target": "y"}, "train": TRAIN}
    kubeflow = {"train_nodes": 2, "checkpoint_pvc": "twinline-shared", "image": IMAGE} | kubeflow
    return validate_params(raw | {"kubeflow": kubeflow}, "test")


# -- the upstream schemas ----------------------------------------------------------------------------------


@functools.cache
def crd_schema(file: str) -> dict:
    if not (SCHEMAS / file).exists():
        pytest.skip(f"{SCHEMAS / file} is absent: the upstream Trainer CRD to validate against (see its README)")
    crd = yaml.load((SCHEMAS / file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]


def schema_errors(obj: dict, file: str) -> list[str]:
    """JSON-schema errors against the CRD's openAPIV3Schema, and fields it does not declare (which the API
    server would drop without a word)."""
    import jsonschema

    schema = crd_schema(file)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    return errors + [f"{path}: not in the schema" for path in unknown_fields(obj, schema)]


CASES = {
    "CPU nodes": {"train": {"gpus": 0}},
    "GPU nodes with a node selector": {"train": {"gpus": 4}, "kubeflow": {"gpu_node_selector": {"pool": "a100"}}},
    "eight GPU nodes": {"train": {"gpus": 8}, "kubeflow": {"train_nodes": 8}},
}


@pytest.mark.parametrize("case", CASES)
def test_every_trainjob_validates_against_the_trainer_crd(case):
    changes = CASES[case]
    params = params_with(**changes.get("kubeflow", {}))
    params = params.model_copy(update={"train": params.train.model_copy(update=changes["train"])})
    job = tj.render_trainjob(params, tj.job_name(), NAMESPACE)
    assert schema_errors(job, "trainjobs.crd.yaml") == []
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    assert job["spec"]["trainer"]["numNodes"] == params.kubeflow.train_nodes
    limits = job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert limits.get("nvidia.com/gpu") == (str(params.train.gpus) if params.train.gpus else None)
    [patch] = job["spec"]["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "shared", "persistentVolumeClaim": {"claimName": "twinline-shared"}}]
    assert pod.get("nodeSelector") == (params.kubeflow.gpu_node_selector or None)
    assert ("tolerations" in pod) == (params.train.gpus > 0)
    # the pipeline namespace enforces the restricted Pod Security Standard; its NetworkPolicy knows the label
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]
    locked = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert pod["containers"][0]["securityContext"] == locked
    assert node["template"]["spec"]["template"]["metadata"]["labels"] == tj.NODE_LABELS
    command = job["spec"]["trainer"]["command"]
    assert command[command.index("--nproc-per-node") + 1] == str(max(1, params.train.gpus))
    env = [e["name"] for e in job["spec"]["trainer"]["env"]]
    assert env == ["PYTHONUNBUFFERED"], "no PET_* (Trainer refuses them: its torch plugin sets them), no MLflow"


def test_the_schema_check_catches_what_the_api_server_would_refuse_or_drop():
    job = tj.render_trainjob(params_with(), "twinline-train-x", NAMESPACE)
    broken = copy.deepcopy(job)
    broken["spec"]["trainer"]["numNodes"] = "two"
    broken["spec"]["trainer"]["numNode"] = 2
    problems = schema_errors(broken, "trainjobs.crd.yaml")
    assert any(p.startswith("spec.trainer.numNodes: 'two' is not of type 'integer'") for p in problems), problems
    assert ".spec.trainer.numNode: not in the schema" in problems


def test_the_runtime_named_is_one_trainer_ships_and_its_copy_validates():
    runtime = yaml.safe_load(RUNTIME.read_text())
    assert params_with().kubeflow.training_runtime == runtime["metadata"]["name"] == "torch-distributed"
    assert runtime["metadata"]["name"] in tj.SHIPPED_RUNTIMES
    assert schema_errors(runtime, "clustertrainingruntimes.crd.yaml") == []
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"


def test_more_than_one_node_needs_the_shared_volume():
    with pytest.raises(UserError, match="kubeflow.train_nodes 2 needs kubeflow.checkpoint_pvc"):
        params_with(checkpoint_pvc="")


@pytest.mark.parametrize(("key", "value"), [("training_runtime", "Torch Distributed!"), ("checkpoint_pvc", "a/../b")])
def test_names_kubernetes_would_refuse_are_refused_when_params_are_read(key, value):
    with pytest.raises(UserError, match=f"kubeflow.{key}: '{re.escape(value)}' is not a Kubernetes object name"):
        params_with(**{key: value})


def test_dry_run_prints_the_trainjob(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["kubeflow"] |= {"train_nodes": 3, "checkpoint_pvc": "twinline-shared"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.trainjob", "--params", str(tmp_path / "p.yaml"), "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    job = yaml.safe_load(out)
    assert job["kind"] == "TrainJob" and job["spec"]["trainer"]["numNodes"] == 3
    assert schema_errors(job, "trainjobs.crd.yaml") == []


# -- create, stream, wait, fail: against a stand-in for the Kubernetes API server ------------------------------


class StandInTrainerApi:
    """Stands in for the Kubernetes API server with Trainer installed: TrainJob create/get, runtime get (the
    upstream torch-distributed), pod list/get/log. mode "run": a created TrainJob's node command runs as one
    torchrun agent per node with the PET_* environment Trainer's torch plugin sets (and a c10d rendezvous
    on 127.0.0.1); "oom": node 1 is OOMKilled and node 0 then exits with an error, nothing runs."""

    def __init__(self, mode: str = "run"):
        self.mode = mode
        self.requests: list[tuple[str, str, dict]] = []
        self.jobs: dict[str, dict] = {}
        self.pods: dict[str, list[dict]] = {}
        self.logs: dict[str, str] = {}
        self.done = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                stand_in.requests.append(("GET", url.path, query))
                self._reply(*stand_in.get(url.path, query))

            def do_POST(self):  # noqa: N802
                url = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append(("POST", url.path, copy.deepcopy(body)))
                self._reply(*stand_in.create(url.path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    @staticmethod
    def not_found(what: str) -> tuple[int, dict]:
        return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": what}

    def get(self, path: str, query: dict):
        if path == f"{GROUP}/clustertrainingruntimes/torch-distributed":
            return 200, yaml.safe_load(RUNTIME.read_text())
        if path.startswith(f"{GROUP}/namespaces/{NAMESPACE}/trainjobs/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            return (200, job) if job else self.not_found("trainjobs not found")
        if path == f"/api/v1/namespaces/{NAMESPACE}/pods":
            name = query["labelSelector"].split("jobset.sigs.k8s.io/jobset-name=")[1].split(",")[0]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods.get(name, [])}
        pods = {p["metadata"]["name"]: p for pods in self.pods.values() for p in pods}
        parts = path.split("/")
        if path.startswith(f"/api/v1/namespaces/{NAMESPACE}/pods/") and parts[-1] in pods:
            return 200, pods[parts[-1]]
        if path.endswith("/log") and parts[-2] in pods:
            assert query.get("container") == "node"
            if query.get("follow", "").lower() == "true":  # the client sends True; Go reads either
                self.done.wait(600)  # a followed log ends when the container does
            return 200, self.logs.get(parts[-2], "")
        return self.not_found(f"{path} not found")  # other runtimes, the trainer's version ConfigMap

    def create(self, path: str, body: dict):
        if path != f"{GROUP}/namespaces/{NAMESPACE}/trainjobs":
            return self.not_found(f"{path} not found")
        name = body["metadata"]["name"]
        body["metadata"] |= {"namespace": NAMESPACE, "creationTimestamp": "2026-12-01T00:00:00Z"}
        self.jobs[name] = body
        nodes = body["spec"]["trainer"]["numNodes"]
        self.pods[name] = [self.pod(name, i, "Running") for i in range(nodes)]
        if self.mode == "run":
            threading.Thread(target=self.run, args=(name,), daemon=True).start()
        else:
            self.pods[name][1] = self.pod(name, 1, "Failed", (137, "OOMKilled", "2026-12-01T00:01:00Z"))
            self.pods[name][0] = self.pod(name, 0, "Failed", (1, "Error", "2026-12-01T00:01:09Z"))
            node_0 = self.pods[name][0]["metadata"]["name"]
            self.logs[node_0] = "train: epoch 1\nerror: train: torchrun worker 0 failed\n"
            self.finish(name, "Failed", "FailedJobs", "jobset failed: job twinline-node-1 failed")
        return 201, body

    @staticmethod
    def pod(job: str, index: int, phase: str, ended: tuple | None = None) -> dict:
        labels = {
            "jobset.sigs.k8s.io/jobset-name": job,
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        status: dict = {"phase": phase}
        if ended:
            code, reason, at = ended
            state = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": at}}
            status["containerStatuses"] = [
                {"name": "node", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0, "state": state}
            ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-node-0-{index}-x7k2p",
                "labels": labels,
                "creationTimestamp": "2026-12-01T00:00:00Z",
            },
            "spec": {"containers": [{"name": "node", "image": IMAGE}]},
            "status": status,
        }

    def finish(self, name: str, condition: str, reason: str, message: str) -> None:
        self.jobs[name]["status"] = {
            "conditions": [
                {
                    "type": condition,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": "2026-12-01T00:02:00Z",
                }
            ]
        }
        self.done.set()

    def run(self, name: str) -> None:
        """Trainer's torch plugin, for real: the node command on every node, with PET_* set as it sets them
        (PET_NPROC_PER_NODE from the CPUs per node, which the command's own --nproc-per-node overrides)."""
        trainer = self.jobs[name]["spec"]["trainer"]
        command = [sys.executable if arg == "python" else arg for arg in trainer["command"]]
        port = free_port()
        env = {
            **os.environ,
            **{e["name"]: e["value"] for e in trainer.get("env", [])},
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["resourcesPerNode"]["limits"]["cpu"]),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
            "PET_RDZV_BACKEND": "c10d",
            "PET_RDZV_ENDPOINT": f"127.0.0.1:{port}",
            "OMP_NUM_THREADS": "1",
        }
        agents = [
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env | {"PET_NODE_RANK": str(i)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(trainer["numNodes"])
        ]
        outputs = [agent.communicate(timeout=600)[0] for agent in agents]
        pods = []
        for i, (agent, text) in enumerate(zip(agents, outputs, strict=True)):
            ended = (agent.returncode, "Completed" if agent.returncode == 0 else "Error", f"2026-12-01T00:0{i}:00Z")
            pods.append(self.pod(name, i, "Succeeded" if agent.returncode == 0 else "Failed", ended))
            self.logs[pods[-1]["metadata"]["name"]] = text
        self.pods[name] = pods
        failed = [i for i, agent in enumerate(agents) if agent.returncode]
        if failed:
            self.finish(name, "Failed", "FailedJobs", f"job node-{failed[0]} failed")
        else:
            self.finish(name, "Complete", "JobsCompleted", "jobset completed")

    def __enter__(self) -> StandInTrainerApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def client_for(api: StandInTrainerApi, tmp_path: Path, monkeypatch):
    """The real TrainerClient of the `kubeflow` SDK, pointed at the stand-in through a kubeconfig."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    from pipelines.deploy import kube_client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", api.url)))
    config = KubernetesBackendConfig(namespace=NAMESPACE, client_configuration=kube_client().configuration)
    return TrainerClient(config)


def outputs_in(folder: Path) -> dict[str, Path]:
    return {file: folder / file for file in tj.OUTPUTS}


def test_two_node_trainjob_on_a_stand_in_trains_the_one_process_model(tmp_path, monkeypatch):
    """Two torchrun agents (--nnodes 2, c10d on 127.0.0.1, gloo, one process each) run the TrainJob's own
    node command; their model equals one process's on the same global batch (the DDP test's tolerance)."""
    workdir = table_data(tmp_path)
    train_cli(workdir, {"seed": 5, "train": {**TRAIN, "gpus": 1}}, "single")
    shared, out = tmp_path / "shared", tmp_path / "out"
    out.mkdir()
    lines: list[str] = []
    with StandInTrainerApi("run") as api:
        client = client_for(api, tmp_path, monkeypatch)
        name = tj.run_trainjob(
            params_with(),
            workdir / "train.npz",
            workdir / "val.npz",
            outputs_in(out),
            shared=shared,
            client=client,
            poll_s=0.2,
            echo=lines.append,
        )
    [create] = [body for method, _, body in api.requests if method == "POST"]
    assert create["metadata"]["name"] == name and create["spec"]["trainer"]["numNodes"] == 2
    assert create == tj.render_trainjob(params_with(), name, NAMESPACE, shared=str(shared)) | {
        "metadata": create["metadata"]
    }, "what is created is what --dry-run shows"
    assert read_json(out / "train_info.json")["processes"] == 2
    a, b = state_dict(workdir / "single.pt"), state_dict(out / "model.pt")
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved < 1e-4, f"two-node weights differ from one process by {moved}"
    single_loss, nodes_loss = (
        [float(row.split(",")[1]) for row in path.read_text().splitlines()[1:]]
        for path in (workdir / "single.csv", out / "history.csv")
    )
    np.testing.assert_allclose(single_loss, nodes_loss, rtol=1e-4)
    # node 0's log, streamed as it was written (which agent c10d made rank 0, and so logs the result, can vary)
    node_0 = f"{name}-node-0-0-x7k2p"
    assert lines == [line for line in api.logs[node_0].splitlines() if line] and lines
    assert "best epoch by val_macro_f1" in "".join(api.logs.values())
    assert create["spec"]["activeDeadlineSeconds"] == params_with().kubeflow.trainjob_timeout_s
    assert not (shared / "trainjobs" / name).exists() and not list(shared.glob("train-*.pt"))


def test_a_trainjob_failing_on_one_node_is_one_line_naming_it_on_a_stand_in(tmp_path, monkeypatch):
    workdir = table_data(tmp_path)
    with StandInTrainerApi("oom") as api, pytest.raises(UserError) as failure:
        tj.run_trainjob(
            params_with(),
            workdir / "train.npz",
            workdir / "val.npz",
            outputs_in(tmp_path),
            shared=tmp_path / "shared",
            client=client_for(api, tmp_path, monkeypatch),
            poll_s=0.2,
        )
    message = str(failure.value)
    assert "\n" not in message
    assert f"TrainJob {NAMESPACE}/twinline-train-" in message
    assert ": node-1 (pod twinline-train-" in message and "OOMKilled, exit 137" in message, message
    assert "jobset failed: job twinline-node-1 failed" in message and "resumes" in message
    assert not (tmp_path / "model.pt").exists()
    assert not list((tmp_path / "shared" / "trainjobs").iterdir()), "the job's copies are removed, failed or not"


def test_the_compiled_train_task_hands_training_to_a_trainjob(tmp_path):
    """With kubeflow.train_nodes > 1 the train task asks for no GPU and gets the task resources (the nodes
    train), mounts the shared volume, and carries the kubeflow section and image it builds the TrainJob from."""
    from pipelines.compile import compile_pipeline

    params = params_with(gpu_node_selector={"pool": "a100"})
    params = params.model_copy(update={"train": params.train.model_copy(update={"gpus": 4})})
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", params).read_text())
    resources = spec["deploymentSpec"]["executors"]["exec-train-step"]["container"]["resources"]
    assert "accelerator" not in resources
    assert resources["cpuLimit"] == float(params.kubeflow.resources.cpu_limit)
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-step"]
    assert "nodeSelector" not in executor and "tolerations" not in executor, "the task itself needs no GPU node"
    [mount] = executor["pvcMount"]
    assert mount["mountPath"] == tj.SHARED and "twinline-shared" in json.dumps(mount)
    inputs = spec["root"]["dag"]["tasks"]["train-step"]["inputs"]["parameters"]
    handed = inputs["trainjob"]["runtimeValue"]["constant"]
    assert handed["train_nodes"] == 2 and handed["image"] == IMAGE and handed["gpu_node_selector"] == {"pool": "a100"}
    assert inputs["checkpoint_dir"]["runtimeValue"]["constant"] == tj.SHARED


def test_a_retried_task_resumes_the_checkpoint_of_its_first_trainjob(tmp_path):
    """A retry creates a new TrainJob whose inputs sit in another folder of the volume: the checkpoint is
    keyed by the inputs' bytes, the params and the world size, not by where the files are, so it is found."""
    workdir = table_data(tmp_path)
    params = params_with()
    found = []
    for job in ("first", "retry"):
        folder = tmp_path / "shared" / "trainjobs" / job
        folder.mkdir(parents=True)
        files = [folder / "train.npz", folder / "val.npz"]
        for file in files:
            file.write_bytes((workdir / file.name).read_bytes())
        found.append(checkpoint_path(tmp_path / "shared", files, params, world=2))
    assert found[0] == found[1] and found[0].parent == tmp_path / "shared"
    assert checkpoint_path(tmp_path / "shared", files, params, world=4) != found[0], "another world size: not resumed"


def test_the_train_task_fails_with_one_line_naming_the_node_on_a_stand_in(tmp_path, monkeypatch):
    """The pipeline's train_step itself, in TrainJob mode: its client from the kubeconfig (the namespace of
    its current context), and a failed TrainJob is the task's last log line."""
    from kfp.dsl import Artifact, Dataset, Model

    from pipelines.steps import train_step

    workdir = table_data(tmp_path)
    (workdir / "splits").mkdir()
    (workdir / "splits" / "val.npz").write_bytes((workdir / "val.npz").read_bytes())
    params = params_with()
    with StandInTrainerApi("oom") as api:
        kubeconfig = yaml.safe_load(write_kubeconfig(tmp_path / "kubeconfig", api.url).read_text())
        kubeconfig["contexts"][0]["context"]["namespace"] = NAMESPACE
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        with pytest.raises(SystemExit) as stopped:
            train_step(
                augmented=Dataset(uri=str(workdir / "train.npz")),
                splits=Dataset(uri=str(workdir / "splits")),
                seed=params.seed,
                data=params.data.model_dump(mode="json"),
                text=params.text.model_dump(mode="json"),
                train=params.train.model_dump(mode="json"),
                checkpoint_dir=str(tmp_path / "shared"),
                trainjob=params.kubeflow.model_dump(mode="json", exclude_none=True),
                model=Model(uri=str(tmp_path / "model")),
                train_info=Artifact(uri=str(tmp_path / "info")),
                history=Artifact(uri=str(tmp_path / "history")),
                timing=Artifact(uri=str(tmp_path / "timing")),
            )
    assert str(stopped.value).startswith(f"error: TrainJob {NAMESPACE}/twinline-train-")
    assert "node-1 (pod" in str(stopped.value) and "OOMKilled, exit 137" in str(stopped.value)
    [(_, path, body)] = [r for r in api.requests if r[0] == "POST"]
    assert path == f"{GROUP}/namespaces/{NAMESPACE}/trainjobs" and body["spec"]["trainer"]["image"] == IMAGE
    assert not (tmp_path / "model").exists()


def test_a_runtime_the_cluster_lacks_is_one_line_saying_what_to_check_on_a_stand_in(tmp_path, monkeypatch):
    workdir = table_data(tmp_path)
    with StandInTrainerApi("oom") as api, pytest.raises(UserError) as failure:
        tj.run_trainjob(
            params_with(training_runtime="torch-custom"),
            workdir / "train.npz",
            workdir / "val.npz",
            outputs_in(tmp_path),
            shared=tmp_path / "shared",
            client=client_for(api, tmp_path, monkeypatch),
        )
    message = str(failure.value)
    assert "\n" not in message and "HTTP 404" in message and "torch-custom" in message, message
    assert "is Kubeflow Trainer installed" in message
    assert not [r for r in api.requests if r[0] == "POST"], "nothing created"
