"""Multi-node training: the train step as a Kubeflow Trainer TrainJob (trainer.kubeflow.org/v1alpha1).

With kubeflow.train_nodes > 1, the pipeline's train task does not train in its own pod. It copies its
inputs to the shared volume (kubeflow.checkpoint_pvc, ReadWriteMany), creates a TrainJob through the
`kubeflow` SDK's TrainerClient on the runtime kubeflow.training_runtime (Trainer ships
`torch-distributed`), streams node 0's log into its own, and waits. Every node runs the project image
as `python -m torch.distributed.run --nproc-per-node GPUS --module components.train ...`: the Trainer's
torch plugin gives torchrun the node count, this node's rank and the master's address (PET_NNODES,
PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT), so the train CLI joins one process group of
nodes x GPUs processes, exactly as under `train.gpus > 1` on one machine. Global rank 0 writes the model,
info, history and timing to the job's folder on the volume, and the task copies them to its output
artifacts. Checkpoints go to the volume too, keyed by inputs, params and world size (components.train),
so a retried task's new TrainJob resumes after the last finished epoch. A failed TrainJob fails the task
with one line naming the failed node and why.

    python -m pipelines.trainjob --params params.yaml --dry-run    # print the TrainJob, contact nothing

The TrainJob is built by the SDK's own builder (KubernetesBackend._get_trainjob_spec and the options'
runtime patches) both for --dry-run and for the real run, so what is reviewed is what is created.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from components.errors import UserError, run_cli, shorten
from components.io import atomic_path
from components.params import Params, load_params

log = logging.getLogger(__name__)

SHARED = "/checkpoints"  # where the shared volume (kubeflow.checkpoint_pvc) is mounted, in the task and every node
VOLUME = "shared"  # its name in the node pods
CONTAINER = "node"  # the trainer container of Trainer's torch runtimes (constants.NODE in the SDK)
# The runtimes Trainer installs (kubeflow/trainer charts/kubeflow-trainer/files/runtimes, commit 8c0f5059, 2026-08-21).
SHIPPED_RUNTIMES = frozenset(
    {
        "torch-distributed",
        "torch-distributed-with-cache",
        "deepspeed-distributed",
        "jax-distributed",
        "mlx-distributed",
        "xgboost-distributed",
        "torchtune-llama3.2-1b",
        "torchtune-llama3.2-3b",
        "torchtune-qwen2.5-1.5b",
    }
)
NODE_LABELS = {"app.kubernetes.io/part-of": "twinline", "app.kubernetes.io/component": "train-node"}
OUTPUTS = ("model.pt", "train_info.json", "history.csv", "timing.json")
POLL_S = 5
DEADLINE_GRACE_S = 120  # waited beyond the TrainJob's deadline for Trainer to mark it Failed


def job_name() -> str:
    """A fresh TrainJob name, a DNS-1035 label: a retried task creates a new TrainJob (that resumes)."""
    return f"twinline-train-{uuid.uuid4().hex[:8]}"


def node_command(params: Params, job_dir: str, shared: str = SHARED) -> list[str]:
    """What every node runs: torchrun (its node count, rank and master from the PET_* environment the
    Trainer's torch plugin sets) around the train CLI, reading and writing the job's folder on the volume.
    One process per GPU (train.gpus), or one CPU process per node when train.gpus is 0."""
    files = {
        "--params": "params.yaml",
        "--train": "train.npz",
        "--val": "val.npz",
        "--model": "model.pt",
        "--info": "train_info.json",
        "--history": "history.csv",
        "--timing": "timing.json",
    }
    argv = [arg for flag, name in files.items() for arg in (flag, f"{job_dir}/{name}")]
    return [
        "python",
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(max(1, params.train.gpus)),
        "--module",
        "components.train",
        *argv,
        "--checkpoints",
        shared,
    ]


def _runtime(name: str):
    """The SDK's view of a torch runtime, without asking a cluster (--dry-run): the builder only reads
    its name, kind and that it takes a custom trainer."""
    from kubeflow.trainer.types import types

    trainer = types.RuntimeTrainer(types.TrainerType.CUSTOM_TRAINER, "torch", image="")
    return types.Runtime(name=name, trainer=trainer, kind=types.RuntimeKind.CLUSTER_TRAINING_RUNTIME)


def trainer_and_options(params: Params, job_dir: str, image: str | None = None, shared: str = SHARED):
    """(CustomTrainerContainer, options) for TrainerClient.train: the project image on
    kubeflow.train_nodes nodes with train.gpus GPUs and kubeflow.train_resources each, the node command,
    and a runtime patch for the node pods: the shared volume, the GPU node selector and tolerations."""
    from kubeflow.trainer import options as o
    from kubeflow.trainer.types import types

    k, res = params.kubeflow, params.kubeflow.train_resources
    per_node: dict[str, Any] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if params.train.gpus > 0:
        per_node["gpu"] = str(params.train.gpus)  # a quantity string, as the API server writes it
    trainer = types.CustomTrainerContainer(
        image=image or k.image,
        num_nodes=k.train_nodes,
        resources_per_node=per_node,
        env={"PYTHONUNBUFFERED": "1"},  # node 0's log reaches the task's log as it is written
    )
    from pipelines.deploy import UID

    gpu = params.train.gpus > 0
    # The pipeline namespace enforces the restricted Pod Security Standard: the image's non-root user, no
    # privilege escalation, no capabilities, RuntimeDefault seccomp; fsGroup makes the volume writable.
    container = o.ContainerPatch(
        name=CONTAINER,
        volume_mounts=[{"name": VOLUME, "mountPath": shared}],
        security_context={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )
    pod = o.PodSpecPatch(
        volumes=[{"name": VOLUME, "persistentVolumeClaim": {"claimName": k.checkpoint_pvc}}],
        containers=[container],
        security_context={
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        node_selector=dict(k.gpu_node_selector) if gpu and k.gpu_node_selector else None,
        tolerations=[t.model_dump(exclude_none=True) for t in k.gpu_tolerations] if gpu else None,
    )
    # NODE_LABELS: the nodes' NetworkPolicy (k8s/base/pipelines) lets them, and only them, reach each other.
    template = o.PodTemplatePatch(metadata={"labels": NODE_LABELS}, spec=pod)
    patch = o.RuntimePatch(
        training_runtime_spec=o.TrainingRuntimeSpecPatch(
            template=o.JobSetTemplatePatch(
                spec=o.JobSetSpecPatch(
                    replicated_jobs=[
                        o.ReplicatedJobPatch(
                            name=CONTAINER,
                            template=o.JobTemplatePatch(spec=o.JobSpecPatch(template=template)),
                        )
                    ]
                )
            )
        )
    )
    labels = o.Labels({"app.kubernetes.io/part-of": "twinline", "app.kubernetes.io/component": "train"})
    # Trainer stops the nodes at the deadline even when the task that waits for them is gone.
    deadline = o.ActiveDeadlineSeconds(k.trainjob_timeout_s)
    return trainer, [labels, patch, deadline, o.TrainerCommand(node_command(params, job_dir, shared))]


def render_trainjob(
    params: Params, name: str, namespace: str, image: str | None = None, shared: str = SHARED
) -> dict[str, Any]:
    """The TrainJob the train task creates, as a dict, built as KubernetesBackend.train builds it (the
    options applied to a job spec, then _get_trainjob_spec and the TrainJob model), without a cluster."""
    from kubeflow.trainer.backends.kubernetes.backend import KubernetesBackend
    from kubeflow_trainer_api import models

    trainer, options = trainer_and_options(params, f"{shared}/trainjobs/{name}", image, shared)
    backend = KubernetesBackend.__new__(KubernetesBackend)  # the builder needs no API client
    job_spec: dict[str, Any] = {}
    for option in options:
        option(job_spec, trainer, backend)
    spec = backend._get_trainjob_spec(
        runtime=_runtime(params.kubeflow.training_runtime),
        trainer=trainer,
        trainer_overrides=job_spec["spec"].get("trainer", {}),
        runtime_patches=job_spec["spec"].get("runtimePatches"),
        active_deadline_seconds=job_spec["spec"].get("activeDeadlineSeconds"),
    )
    job = models.TrainerV1alpha1TrainJob(
        apiVersion="trainer.kubeflow.org/v1alpha1",
        kind="TrainJob",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=namespace, labels=job_spec["metadata"]["labels"]
        ),
        spec=spec,
    )
    return job.to_dict()


# -- create, stream, wait --------------------------------------------------------------------------------------


@contextlib.contextmanager
def trainer_errors(name: str, namespace: str) -> Iterator[None]:
    """The SDK's failures (RuntimeError / TimeoutError wrapping the client's) as one line saying what to check."""
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except (RuntimeError, TimeoutError) as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ApiException):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ApiException):
            from pipelines.deploy import api_message

            message = api_message(cause)
            hint = {
                403: f"the run's service account needs the Role pipeline-runner of k8s/base/pipelines in {namespace}",
                404: "is Kubeflow Trainer installed (CRD trainjobs.trainer.kubeflow.org) with this runtime?",
            }.get(cause.status, "")
            detail = f"HTTP {cause.status}: {shorten(str(message), 200)}" + (f"; {hint}" if hint else "")
        else:
            root: BaseException = exc
            while root.__cause__ is not None:
                root = root.__cause__
            detail = shorten(" ".join(str(exc).split()), 200) + (f" ({type(root).__name__})" if root is not exc else "")
        raise UserError(f"TrainJob {namespace}/{name}: {detail}") from None


def failure(client, name: str) -> str:
    """Which node failed and why, in one line: of the Failed nodes, the one whose container ended first (the
    others fail because it did), with its termination reason, exit code and its log's last `error:` line,
    and the TrainJob's Failed condition."""
    backend = client.backend
    job = backend.custom_api.get_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", backend.namespace, "trainjobs", name
    )
    conditions = (job.get("status") or {}).get("conditions") or []
    condition: dict = next((c for c in conditions if c.get("type") == "Failed"), {})
    why = ": ".join(str(condition[k]) for k in ("reason", "message") if condition.get(k)) or "no reason given"
    ended = []
    for step in client.get_job(name).steps:
        if step.status != "Failed":
            continue
        pod = backend.core_api.read_namespaced_pod(step.pod_name, backend.namespace)
        for status in pod.status.container_statuses or []:
            if status.name == CONTAINER and status.state and status.state.terminated:
                ended.append((status.state.terminated, step))
    if not ended:
        return f"TrainJob {backend.namespace}/{name} failed ({shorten(why, 200)})"
    first, step = min(ended, key=lambda pair: (pair[0].finished_at is None, pair[0].finished_at, pair[1].name))
    errors = [line for line in client.get_job_logs(name, step=step.name) if line.startswith("error:")]
    said = f"; it said: {shorten(errors[-1], 200)}" if errors else ""
    return (
        f"TrainJob {backend.namespace}/{name}: {step.name} (pod {step.pod_name}) "
        f"{first.reason or 'terminated'}, exit {first.exit_code}{said} ({shorten(why, 200)}); "
        "rerun and training resumes from the last epoch checkpoint"
    )


def current_namespace() -> str:
    """The namespace this task runs in (its service account's), else the kubeconfig's current context's
    (KUBECONFIG as it is now, else ~/.kube/config), else "default"."""
    import os

    from kubernetes import config

    in_pod = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if in_pod.exists():
        return in_pod.read_text().strip()
    try:
        _, current = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG") or "~/.kube/config")
        return current["context"].get("namespace") or "default"
    except (config.ConfigException, OSError, KeyError, TypeError):
        return "default"


def run_trainjob(
    params: Params,
    train: Path,
    val: Path,
    outputs: dict[str, Path],
    shared: Path = Path(SHARED),
    image: str | None = None,
    client=None,
    poll_s: float = POLL_S,
    echo=print,
) -> str:
    """Train on kubeflow.train_nodes nodes through a TrainJob and copy the results to `outputs` (keys
    OUTPUTS: model.pt, train_info.json, history.csv, timing.json). train / val: the augmented training set
    and the validation split (.npz), copied to the shared volume first. client: a TrainerClient (default:
    the in-cluster service account, else the kubeconfig, in its namespace). echo: gets node 0's log
    lines. Returns the TrainJob's name. Raises UserError (one line) when the API server refuses or the
    TrainJob fails, naming the node, or is not done after kubeflow.trainjob_timeout_s (its
    activeDeadlineSeconds: Trainer then stops the nodes, and it is deleted if it still runs)."""
    from kubeflow.trainer import TrainerClient
    from kubeflow.trainer.options import Name

    name = job_name()
    job_dir = shared / "trainjobs" / name
    job_dir.mkdir(parents=True)
    for source, copy in ((train, "train.npz"), (val, "val.npz")):
        with atomic_path(job_dir / copy) as tmp:
            shutil.copyfile(source, tmp)
    sections = params.model_dump(mode="json", include={"seed", "data", "text", "train"})
    (job_dir / "params.yaml").write_text(yaml.safe_dump(sections))
    if client is None:
        from kubeflow.common.types import KubernetesBackendConfig

        from pipelines.deploy import kube_client

        api = kube_client().configuration
        client = TrainerClient(KubernetesBackendConfig(namespace=current_namespace(), client_configuration=api))
    namespace = client.backend.namespace
    trainer, options = trainer_and_options(params, str(job_dir), image, str(shared))
    options.insert(0, Name(name))
    try:
        with trainer_errors(name, namespace):
            client.train(runtime=params.kubeflow.training_runtime, trainer=trainer, options=options)
            log.info("created TrainJob %s/%s: %d nodes", namespace, name, params.kubeflow.train_nodes)
            # The TrainJob's own deadline (activeDeadlineSeconds) fails it first, with a condition saying so.
            timeout = params.kubeflow.trainjob_timeout_s + DEADLINE_GRACE_S
            started = time.monotonic()
            client.wait_for_job_status(name, {"Running", "Complete", "Failed"}, timeout, poll_s)
            for line in client.get_job_logs(name, follow=True):  # node 0 holds global rank 0: its log is the run's
                echo(line)
            left = max(int(poll_s) + 1, int(timeout - (time.monotonic() - started)))
            try:
                job = client.wait_for_job_status(name, {"Complete", "Failed"}, left, poll_s)
            except TimeoutError:
                client.delete_job(name)  # its nodes hold GPUs: nothing waits for them any more
                raise
            if job.status == "Failed":
                raise UserError(failure(client, name))
        for file, target in outputs.items():
            with atomic_path(target) as tmp:
                shutil.copyfile(job_dir / file, tmp)
    finally:  # inputs and outputs; the checkpoint lies beside, for a retry (rank 0 removed it if it finished)
        shutil.rmtree(job_dir, ignore_errors=True)
    return name


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="The Kubeflow Trainer TrainJob of the multi-node train step.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the TrainJob as YAML; contact no cluster")
    parser.add_argument("--namespace", default="twinline-pipelines", help="shown in the printed TrainJob")
    parser.add_argument("--image", help="the node image (default: kubeflow.image)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if not args.dry_run:
        raise UserError("only --dry-run runs from the command line; the pipeline's train task creates TrainJobs")
    if params.kubeflow.train_nodes < 2:
        print(f"# kubeflow.train_nodes is {params.kubeflow.train_nodes}: train runs in the task's own pod, no TrainJob")
        return
    print(yaml.safe_dump(render_trainjob(params, job_name(), args.namespace, args.image), sort_keys=False), end="")


if __name__ == "__main__":
    run_cli(main)
