"""The Kubeflow pipeline: the same component code as dvc.yaml, as kfp v2 tasks with typed artifacts.

    fetch -> clean -> normalise -> augment -> train -> evaluate -> register [-> deploy, if promoted]

Every step is a `*_step` wrapper of pipelines/steps.py, which calls the same function the DVC stage's
CLI calls. Pipeline parameters default from params.yaml; how tasks are scheduled
(image, resources, GPUs, MLflow secret) comes from params.yaml's `kubeflow` section at compile time.

deploy (pipelines/deploy.py) runs only when the run parameter `deploy` is true (the default) and register
promoted the new version to @champion: it rolls that version out to KServe in serve.namespace, with the
same image, and waits until the InferenceService is Ready.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Artifact

from components.params import Kubeflow, Params, Resources
from components.tracking import MLFLOW_ENV
from pipelines import steps, trainjob

PIPELINE_NAME = "twinline"
CHECKPOINTS = trainjob.SHARED  # where train_step finds the checkpoint volume, when there is one


class PipelineOutputs(NamedTuple):
    """What a run returns: the test metrics and register's receipt (version, champion or not)."""

    metrics_json: Artifact
    registration: Artifact


def _limit(task: dsl.PipelineTask, resources: Resources) -> dsl.PipelineTask:
    return (
        task.set_cpu_request(resources.cpu_request)
        .set_cpu_limit(resources.cpu_limit)
        .set_memory_request(resources.memory_request)
        .set_memory_limit(resources.memory_limit)
    )


def with_mlflow(task: dsl.PipelineTask, secret: str) -> dsl.PipelineTask:
    """The task gets MLflow's address and credentials from the Secret `secret` (kubeflow.mlflow_secret), never
    from pipeline parameters in clear. Username/password are optional keys: a server without auth needs only
    the URI. Every pipeline's tasks that talk to MLflow get them this way, and no other task does."""
    kubernetes.use_secret_as_env(task, secret, {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"})
    kubernetes.use_secret_as_env(task, secret, {key: key for key in MLFLOW_ENV[1:]}, optional=True)
    return task


class Prepared(NamedTuple):
    """The tasks every pipeline starts with: fetch -> clean -> normalise -> augment."""

    cleaned: dsl.PipelineTask
    split: dsl.PipelineTask  # normalise: outputs splits, preprocess, report
    augmented: dsl.PipelineTask


def component(step, image: str):
    # The image has the project and kfp installed: nothing is pip-installed when a task starts.
    return dsl.component(step, base_image=image, install_kfp_package=False)


def prepare(
    params: Params,
    image: str,
    *,
    data_uri,
    dvc_repo,
    dvc_rev,
    dvc_path,
    seed,
    data,
    clean,
    split,
    normalise,
    augment,
    text,
    train,
) -> Prepared:
    """fetch -> clean -> normalise -> augment, from a pipeline's parameters (the training and the tuning
    pipeline's alike). params: what the pipeline is compiled from (its kubeflow section, and whether augment
    fits a generator: that task then gets train's resources, retries, checkpoint volume and a GPU)."""
    k = params.kubeflow
    # data_root is a constant of the compiled spec, not a run parameter: whoever starts a run
    # cannot widen what fetch may read.
    fetched = _limit(
        component(steps.fetch_step, image)(
            data_uri=data_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev, dvc_path=dvc_path, data_root=k.data_root
        ),
        k.resources,
    ).set_display_name("fetch")
    cleaned = _limit(
        component(steps.clean_step, image)(raw=fetched.outputs["raw"], data=data, clean_cfg=clean, split=split),
        k.resources,
    ).set_display_name("clean")
    split_task = _limit(
        component(steps.normalise_step, image)(
            clean=cleaned.outputs["clean"],
            seed=seed,
            data=data,
            split=split,
            normalise=normalise,
            clean_cfg=clean,
            text=text,
            train=train,
        ),
        k.resources,
    ).set_display_name("normalise")
    generative = params.augment.generator != "none"  # a generator trains: the task is placed as train's is
    augmented = _limit(
        component(steps.augment_step, image)(
            splits=split_task.outputs["splits"],
            preprocess=split_task.outputs["preprocess"],
            seed=seed,
            augment=augment,
            checkpoint_dir=CHECKPOINTS if generative and k.checkpoint_pvc else "",
        ),
        k.train_resources if generative else k.resources,
    ).set_display_name("augment")
    if generative:
        augmented.set_retry(num_retries=k.train_retries)
        if k.checkpoint_pvc:
            kubernetes.mount_pvc(augmented, pvc_name=k.checkpoint_pvc, mount_path=CHECKPOINTS)
        if params.augment.device != "cpu" and params.train.gpus > 0:
            on_gpus(augmented, params, count=1)
    return Prepared(cleaned, split_task, augmented)


def on_gpus(task: dsl.PipelineTask, params: Params, count: int | None = None) -> None:
    """A training task asks for `count` (default train.gpus) GPUs on the GPU nodes (kubeflow.gpu_node_selector,
    gpu_tolerations)."""
    k = params.kubeflow
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(count or params.train.gpus)
    for label, value in k.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in k.gpu_tolerations:
        kubernetes.add_toleration(task, **toleration.model_dump(exclude_none=True))


def evaluate_and_register(
    k: Kubeflow,
    image: str,
    prepared: Prepared,
    trained: dsl.PipelineTask,
    *,
    seed,
    data,
    clean,
    split,
    normalise,
    augment,
    text,
    train,
    evaluate,
    register,
    mlflow,
) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
    """evaluate -> register of the model a training task made (outputs model, train_info, history, timing);
    returns (evaluate, register). text and train are what the model was trained with."""
    split_task = prepared.split
    scored = _limit(
        component(steps.evaluate_step, image)(
            model=trained.outputs["model"], splits=split_task.outputs["splits"], evaluate=evaluate
        ),
        k.resources,
    ).set_display_name("evaluate")
    registered = _limit(
        component(steps.register_step, image)(
            model=trained.outputs["model"],
            preprocess=split_task.outputs["preprocess"],
            splits=split_task.outputs["splits"],
            predictions=scored.outputs["predictions"],
            errors=scored.outputs["errors"],
            metrics_json=scored.outputs["metrics_json"],
            plots=scored.outputs["plots"],
            train_info=trained.outputs["train_info"],
            history=trained.outputs["history"],
            timing=trained.outputs["timing"],
            clean_report=prepared.cleaned.outputs["report"],
            split_report=split_task.outputs["report"],
            augment_report=prepared.augmented.outputs["report"],
            augment_plot=prepared.augmented.outputs["plot"],
            seed=seed,
            data=data,
            clean_cfg=clean,
            split=split,
            normalise=normalise,
            augment=augment,
            text=text,
            train=train,
            register=register,
            mlflow=mlflow,
        ),
        k.resources,
    ).set_display_name("register")
    registered.set_caching_options(False)  # it reads and moves the registry's champion: always run
    with_mlflow(registered, k.mlflow_secret)  # the only task that talks to MLflow
    return scored, registered


def build_pipeline(params: Params, image: str | None = None):
    """The pipeline function for these params; `image` overrides params.kubeflow.image."""
    k = params.kubeflow
    image = image or k.image

    train_op, deploy_op = component(steps.train_step, image), component(steps.deploy_step, image)
    p = params.model_dump(mode="json", exclude_none=True)  # KFP parameters cannot hold null; the schema restores it
    nodes = k.train_nodes > 1  # train through a Kubeflow Trainer TrainJob (pipelines/trainjob.py)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="clean -> normalise -> augment -> train -> evaluate -> register, tracked and registered in "
        "MLflow; a promoted champion is deployed to KServe",
    )
    def twinline_pipeline(
        data_uri: str = "",
        dvc_repo: str = "",
        dvc_rev: str = "",
        dvc_path: str = params.data.path,
        seed: int = params.seed,
        data: dict = p["data"],
        clean: dict = p["clean"],
        split: dict = p["split"],
        normalise: dict = p["normalise"],
        augment: dict = p["augment"],
        text: dict = p["text"],
        train: dict = p["train"],
        evaluate: dict = p["evaluate"],
        register: dict = p["register"],
        mlflow: dict = p["mlflow"],
        serve: dict = p["serve"],
        deploy: bool = True,
    ) -> PipelineOutputs:
        prepared = prepare(
            params,
            image,
            data_uri=data_uri,
            dvc_repo=dvc_repo,
            dvc_rev=dvc_rev,
            dvc_path=dvc_path,
            seed=seed,
            data=data,
            clean=clean,
            split=split,
            normalise=normalise,
            augment=augment,
            text=text,
            train=train,
        )
        trained = _limit(
            train_op(
                augmented=prepared.augmented.outputs["augmented"],
                splits=prepared.split.outputs["splits"],
                seed=seed,
                data=data,
                text=text,
                train=train,
                checkpoint_dir=CHECKPOINTS if k.checkpoint_pvc else "",
                trainjob={**p["kubeflow"], "image": image} if nodes else {},
            ),
            k.resources if nodes else k.train_resources,  # with a TrainJob, the nodes train, not this pod
        ).set_display_name("train")
        trained.set_retry(num_retries=k.train_retries)
        if k.checkpoint_pvc:
            kubernetes.mount_pvc(trained, pvc_name=k.checkpoint_pvc, mount_path=CHECKPOINTS)
        if params.train.gpus > 0 and not nodes:
            on_gpus(trained, params)
        scored, registered = evaluate_and_register(
            k,
            image,
            prepared,
            trained,
            seed=seed,
            data=data,
            clean=clean,
            split=split,
            normalise=normalise,
            augment=augment,
            text=text,
            train=train,
            evaluate=evaluate,
            register=register,
            mlflow=mlflow,
        )
        # KFP compares the output parameter to the constant: `is True` would be evaluated here, not in the run.
        with (
            dsl.If(deploy == True, name="deploy-enabled"),  # noqa: E712
            dsl.If(registered.outputs["promoted"] == True, name="promoted"),  # noqa: E712
        ):
            deployed = _limit(
                deploy_op(
                    register=register,
                    version=registered.outputs["version"],
                    serve=serve,
                    image=image,
                    mlflow_secret=k.mlflow_secret,
                ),
                k.resources,
            ).set_display_name("deploy")
            deployed.set_caching_options(False)  # it reads and changes the cluster: always run
        return PipelineOutputs(scored.outputs["metrics_json"], registered.outputs["registration"])

    return twinline_pipeline
