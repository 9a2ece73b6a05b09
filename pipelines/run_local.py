"""Run the whole Kubeflow pipeline on this machine with kfp.local (no cluster, no Docker).

Each task runs as a subprocess in this Python environment, with real artifacts passed between tasks,
on the sample data. Writes the same metrics.json and registration.json as the DVC pipeline.

    python -m pipelines.run_local [--output-dir build/kfp-local] [--params params.yaml]
        [--data-uri DIR | --dvc-repo . --dvc-rev HEAD]

MLflow: MLFLOW_TRACKING_URI if set, else the embedded store sqlite:///mlflow/mlflow.db (as dvc repro).
"""

import argparse
import logging
import os
import shutil
from pathlib import Path

from components.errors import run_cli
from components.params import load_params

log = logging.getLogger(__name__)


def run_local(
    output_dir: Path, params_path: Path = Path("params.yaml"), data_uri: str = "", dvc_repo: str = "", dvc_rev: str = ""
) -> dict[str, Path]:
    from kfp import local

    from pipelines.pipeline import build_pipeline

    params = load_params(params_path)
    if not (data_uri or dvc_repo):
        data_uri = str(Path(params.data.path).resolve())
    source = data_uri or dvc_repo
    if "://" not in source:
        # Local data named by whoever runs this on their own machine: fetch may read it. On a cluster,
        # kubeflow.data_root bounds what a run's data_uri or dvc_repo can reach.
        params = params.model_copy(
            update={"kubeflow": params.kubeflow.model_copy(update={"data_root": str(Path(source).resolve())})}
        )
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
    pipeline = build_pipeline(params)
    run = pipeline(data_uri=data_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev)
    results = {
        "metrics.json": Path(run.outputs["metrics_json"].path),
        "registration.json": Path(run.outputs["registration"].path),
    }
    copied = {}
    for name, path in results.items():
        copied[name] = output_dir / name
        shutil.copyfile(path, copied[name])
    return copied


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Run the Kubeflow pipeline locally with kfp.local.")
    parser.add_argument("--output-dir", type=Path, default=Path("build/kfp-local"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data-uri", default="", help="data folder or URL (default: data.path from params)")
    parser.add_argument("--dvc-repo", default="", help="read the data through dvc.api from this repo instead")
    parser.add_argument("--dvc-rev", default="")
    args = parser.parse_args(argv)
    for name, path in run_local(args.output_dir, args.params, args.data_uri, args.dvc_repo, args.dvc_rev).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    run_cli(main)
