"""The Kubeflow tuning pipeline: the search of params.yaml's `tune` section as parallel tasks, then the best
model through the same evaluate and register (champion gate) as the training pipeline.

    fetch -> clean -> normalise -> augment -> sample trials
          -> ParallelFor(trials, parallelism=tune.parallelism): trial (train with the trial's values)
          -> pick best (dsl.Collected scores and models) -> evaluate -> register

The configurations are sampled up front (Optuna's RandomSampler, seeded) and fanned out with dsl.ParallelFor,
rather than by Katib through the kubeflow SDK's optimizer: it needs nothing on the cluster beyond Kubeflow
Pipelines, runs under kfp.local, and each trial is the same task and artifacts as the training pipeline's
train. What it gives up: trials cannot learn from earlier scores (TPE) and are not pruned; both are what
`python -m pipelines.tune` does. A failed trial scores -1 and the run goes on (its error is in its `result`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact

from components.params import Params
from pipelines import steps
from pipelines.pipeline import _limit, component, evaluate_and_register, on_gpus, prepare

PIPELINE_NAME = "twinline-tune"


class TuneOutputs(NamedTuple):
    """What a run returns: the best model's test metrics, register's receipt, and every trial's result."""

    metrics_json: Artifact
    registration: Artifact
    best: Artifact


def build_tune_pipeline(params: Params, image: str | None = None):
    """The tuning pipeline function for these params (tune: the space, n_trials, parallelism); `image`
    overrides params.kubeflow.image. Its outputs are the training pipeline's and `best`, every trial's result."""
    from pipelines.tune import check_space

    check_space(params)  # an empty space, or a bound its key refuses: one line now, not failed trials on the cluster
    k = params.kubeflow
    image = image or k.image

    sample_op, trial_op, pick_op = (
        component(steps.sample_trials_step, image),
        component(steps.trial_step, image),
        component(steps.pick_best_step, image),
    )
    p = params.model_dump(mode="json", exclude_none=True, by_alias=True)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="a hyperparameter search over tune.space as parallel train tasks; the best model is "
        "evaluated and registered in MLflow through the champion gate",
    )
    def twinline_tune_pipeline(
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
        tune: dict = p["tune"],
    ) -> TuneOutputs:
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
        sampled = _limit(sample_op(tune=tune, train=train, text=text), k.resources).set_display_name("sample trials")
        # parallelism is fixed when compiling (a ParallelFor argument), from tune.parallelism.
        with dsl.ParallelFor(sampled.output, parallelism=params.tune.parallelism, name="trials") as trial:
            tried = _limit(
                trial_op(
                    augmented=prepared.augmented.outputs["augmented"],
                    splits=prepared.split.outputs["splits"],
                    seed=seed,
                    data=data,
                    text=text,
                    train=train,
                    trial=trial,
                ),
                k.train_resources,
            ).set_display_name("trial")
            if params.train.gpus > 0:
                on_gpus(tried, params)
        best = _limit(
            pick_op(
                results=dsl.Collected(tried.outputs["result"]),
                models=dsl.Collected(tried.outputs["model"]),
                train_infos=dsl.Collected(tried.outputs["train_info"]),
                histories=dsl.Collected(tried.outputs["history"]),
                timings=dsl.Collected(tried.outputs["timing"]),
                text=text,
                train=train,
            ),
            k.resources,
        ).set_display_name("pick best")
        scored, registered = evaluate_and_register(
            k,
            image,
            prepared,
            best,  # the best trial's model, train_info, history and timing
            seed=seed,
            data=data,
            clean=clean,
            split=split,
            normalise=normalise,
            augment=augment,
            text=best.outputs["text"],
            train=best.outputs["train"],
            evaluate=evaluate,
            register=register,
            mlflow=mlflow,
        )
        return TuneOutputs(scored.outputs["metrics_json"], registered.outputs["registration"], best.outputs["best"])

    return twinline_tune_pipeline
