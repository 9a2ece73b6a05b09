"""The batch-scoring pipeline: a registered model's predictions on new data, as a kfp v2 Dataset.

    fetch -> predict

`fetch` is the training pipeline's first task (pipelines/steps.py: fetch_step, its data root fixed when
compiling); `predict` (predict_step) calls components.predict.predict, what `python -m components.predict`
runs: the model is loaded as data, the files are read as its training data were, and the output has an `id`
column, `label` and one `prob_<class>` column per class. The predict task gets MLflow's address and
credentials from the Secret (kubeflow.mlflow_secret), as register does in the training pipeline; it is never
cached, since `@champion` can move between two runs.

    python -m pipelines.compile --pipeline score --output score.yaml [--image ...]   # compile
    python -m pipelines.run_local --score --data-uri new-images/ [--model models:/NAME@champion]  # kfp.local
"""

from kfp import dsl
from kfp.dsl import Dataset

from components.params import Params
from pipelines import steps
from pipelines.pipeline import _limit, with_mlflow

SCORE_PIPELINE_NAME = "twinline-score"


def default_model_uri(params: Params) -> str:
    """The champion of the model the training pipeline registers: models:/<register.model_name>@champion."""
    return f"models:/{params.register.model_name}@champion"


def build_score_pipeline(params: Params, image: str | None = None):
    """The batch-scoring pipeline function for these params (the model URI's default, the kubeflow section's
    image, resources, data root and MLflow secret); `image` overrides params.kubeflow.image."""
    k = params.kubeflow
    image = image or k.image
    fetch_op, predict_op = (
        dsl.component(step, base_image=image, install_kfp_package=False)
        for step in (steps.fetch_step, steps.predict_step)
    )

    @dsl.pipeline(
        name=SCORE_PIPELINE_NAME,
        description="fetch -> predict: a registered model's predictions (id, label, prob_<class>) on new data",
    )
    def score_pipeline(
        data_uri: str = "",
        dvc_repo: str = "",
        dvc_rev: str = "",
        dvc_path: str = params.data.path,
        model_uri: str = default_model_uri(params),
        output_format: str = "csv",
    ) -> Dataset:
        # data_root is a constant of the compiled spec, as in the training pipeline: not a run parameter.
        fetched = _limit(
            fetch_op(data_uri=data_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev, dvc_path=dvc_path, data_root=k.data_root),
            k.resources,
        ).set_display_name("fetch")
        scored = _limit(
            predict_op(data=fetched.outputs["raw"], model_uri=model_uri, output_format=output_format), k.resources
        ).set_display_name("predict")
        scored.set_caching_options(False)  # models:/NAME@champion may name another version at the next run
        with_mlflow(scored, k.mlflow_secret)  # the only task that talks to MLflow
        return scored.outputs["predictions"]

    return score_pipeline
