"""Run the whole Kubeflow pipeline on this machine with kfp.local (no cluster, no Docker).

Each task runs as a subprocess in this Python environment, with real artifacts passed between tasks,
on the sample data. Writes the same metrics.json and registration.json as the DVC pipeline. With --score,
runs the batch-scoring pipeline (pipelines/score.py) instead and writes predictions.csv (or .parquet), what
`python -m components.predict` writes for the same model and files (ids: the fetched copies' paths).

    python -m pipelines.run_local [--output-dir build/kfp-local] [--params params.yaml]
        [--data-uri DIR | --dvc-repo . --dvc-rev HEAD] [--deploy]
    python -m pipelines.run_local --tune [--params params.yaml] [--data-uri DIR]   # the tuning pipeline
    python -m pipelines.run_local --score --data-uri DIR [--model models:/NAME@champion] [--format parquet]

MLflow: MLFLOW_TRACKING_URI if set, else the embedded store sqlite:///mlflow/mlflow.db (as dvc repro).
The deploy task is skipped unless --deploy: with it, a promoted version is rolled out to the Kubernetes
cluster of the kubeconfig's current context (KUBECONFIG), as pipelines/deploy.py does.
"""

import argparse
import logging
import os
import shutil
from pathlib import Path

from components.errors import run_cli
from components.params import Params, load_params

log = logging.getLogger(__name__)


def run_local(
    output_dir: Path,
    params_path: Path = Path("params.yaml"),
    data_uri: str = "",
    dvc_repo: str = "",
    dvc_rev: str = "",
    deploy: bool = False,
    tune: bool = False,
) -> dict[str, Path]:
    """Run the pipeline with kfp.local; returns where metrics.json and registration.json were copied.
    deploy: run the deploy task for a promoted version (off by default: no cluster is assumed).
    tune: run the tuning pipeline (pipelines/tune_pipeline.py) instead; best.json (every trial) is copied too."""
    from kfp import local

    from pipelines.pipeline import build_pipeline
    from pipelines.tune_pipeline import build_tune_pipeline

    params = load_params(params_path)
    if not (data_uri or dvc_repo):
        data_uri = str(Path(params.data.path).resolve())
    params = readable(params, data_uri or dvc_repo)
    # Tasks are separate processes with their own working directory: give them absolute locations.
    from components import tracking

    os.environ["MLFLOW_TRACKING_URI"] = tracking.absolute_tracking_uri()
    tracking.configure()
    tracking.experiment_id(params.mlflow.experiment)  # create the store once, before tasks race to migrate it

    output_dir = output_dir.resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output_dir / "pipeline-root"),
        raise_on_error=True,
    )
    if tune:
        run = build_tune_pipeline(params)(data_uri=data_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev)
    else:
        run = build_pipeline(params)(data_uri=data_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev, deploy=deploy)
    results = {
        "metrics.json": Path(run.outputs["metrics_json"].path),
        "registration.json": Path(run.outputs["registration"].path),
    }
    if tune:
        results["best.json"] = Path(run.outputs["best"].path)
    copied = {}
    for name, path in results.items():
        copied[name] = output_dir / name
        shutil.copyfile(path, copied[name])
    return copied


def readable(params: Params, source: str) -> Params:
    """params whose kubeflow.data_root is a local source itself: data named by whoever runs this on their own
    machine, which fetch may read. On a cluster, kubeflow.data_root bounds what a run's data_uri or dvc_repo
    can reach."""
    if "://" in source:
        return params
    return params.model_copy(
        update={"kubeflow": params.kubeflow.model_copy(update={"data_root": str(Path(source).resolve())})}
    )


def score_local(
    output_dir: Path,
    params_path: Path = Path("params.yaml"),
    data_uri: str = "",
    dvc_repo: str = "",
    dvc_rev: str = "",
    model_uri: str = "",
    output_format: str = "csv",
) -> Path:
    """Run the batch-scoring pipeline with kfp.local on data_uri (or a DVC repo's dvc_path) with the model
    model_uri (default: models:/<register.model_name>@champion); returns output_dir/predictions.<format>.
    The store must exist (nothing is registered here). Raises UserError for no data or a missing store."""
    from kfp import local

    from components import tracking
    from components.errors import UserError
    from pipelines.score import build_score_pipeline

    if not (data_uri or dvc_repo):
        raise UserError("--score: give the data to score, --data-uri DIR_OR_FILE_OR_URL or --dvc-repo")
    params = readable(load_params(params_path), data_uri or dvc_repo)
    os.environ["MLFLOW_TRACKING_URI"] = tracking.absolute_tracking_uri()
    tracking.configure(create=False)  # a reader: a store that is not there is an error, not a new empty one

    output_dir = output_dir.resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output_dir / "pipeline-root"),
        raise_on_error=False,  # a failed task: its one-line error below, not kfp's traceback
    )
    arguments = {"data_uri": data_uri, "dvc_repo": dvc_repo, "dvc_rev": dvc_rev, "output_format": output_format}
    run = build_score_pipeline(params)(**arguments, **({"model_uri": model_uri} if model_uri else {}))
    if not run.outputs:  # kfp.local printed the failed task's output, ending with its one-line error
        raise UserError("the batch-scoring run failed: the failed task's error is in its output above")
    copied = output_dir / f"predictions.{output_format}"
    shutil.copyfile(run.output.path, copied)
    return copied


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Run the Kubeflow pipeline locally with kfp.local.")
    parser.add_argument("--output-dir", type=Path, default=Path("build/kfp-local"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data-uri", default="", help="data folder or URL (default: data.path from params)")
    parser.add_argument("--dvc-repo", default="", help="read the data through dvc.api from this repo instead")
    parser.add_argument("--dvc-rev", default="")
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="deploy a promoted version to KServe on the kubeconfig's cluster (default: skip the deploy task)",
    )
    parser.add_argument(
        "--score",
        action="store_true",
        help="run the batch-scoring pipeline (fetch -> predict) instead: predictions of --model on the data",
    )
    parser.add_argument(
        "--tune", action="store_true", help="run the tuning pipeline (params.yaml's tune section) instead"
    )
    parser.add_argument("--model", default="", help="with --score: default models:/<register.model_name>@champion")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="with --score: the output's")
    args = parser.parse_args(argv)
    if args.score:
        path = score_local(
            args.output_dir, args.params, args.data_uri, args.dvc_repo, args.dvc_rev, args.model, args.format
        )
        print(f"predictions: {path}")
        return
    copied = run_local(args.output_dir, args.params, args.data_uri, args.dvc_repo, args.dvc_rev, args.deploy, args.tune)
    for name, path in copied.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    run_cli(main)
