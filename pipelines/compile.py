"""Compile a Kubeflow pipeline to IR YAML: the training pipeline (pipelines/pipeline.py), or with
--pipeline score the batch-scoring one (pipelines/score.py), with --pipeline tune the tuning one
(pipelines/tune_pipeline.py).

python -m pipelines.compile --output pipeline.yaml [--image REGISTRY/twinline:TAG] [--params params.yaml]
python -m pipelines.compile --pipeline score --output score.yaml [--image ...] [--params params.yaml]
"""

import argparse
import logging
from pathlib import Path

from kfp import compiler

from components.errors import UserError, run_cli
from components.io import atomic_path
from components.params import Params, check_image, load_params
from pipelines.pipeline import build_pipeline
from pipelines.score import build_score_pipeline
from pipelines.tune_pipeline import build_tune_pipeline

log = logging.getLogger(__name__)
PIPELINES = {"train": build_pipeline, "score": build_score_pipeline, "tune": build_tune_pipeline}


def compile_pipeline(output: Path, params: Params, image: str | None = None, pipeline: str = "train") -> Path:
    """Compile the pipeline (PIPELINES: train or score) for `params` (image: overrides kubeflow.image) to IR
    YAML at output. An image
    named by a tag, not a digest, gets a warning: a tag can be moved to other code between two runs, and
    the tasks hold the MLflow credentials."""
    try:  # kubeflow.image was checked with the params; the override is checked here
        chosen = check_image(image) if image else params.kubeflow.image
    except ValueError as exc:
        raise UserError(f"--image: {exc}") from None
    if "@sha256:" not in chosen:
        log.warning(
            "image %s is a tag, not a digest: pin it (REGISTRY/twinline@sha256:...) so every task of "
            "every run executes the code you reviewed (k8s/README.md: bumping digests)",
            chosen,
        )
    built = PIPELINES[pipeline](params, image)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(built, str(tmp))
    return output


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Compile a Kubeflow pipeline to IR YAML.")
    parser.add_argument(
        "--pipeline",
        choices=sorted(PIPELINES),
        default="train",
        help="train: fetch -> ... -> register (default); score: fetch -> predict, batch predictions of a model; "
        "tune: the search of params.yaml's tune section as parallel trials, the best one evaluated and registered",
    )
    parser.add_argument("--output", type=Path, default=Path("pipeline.yaml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--image", help="container image for every task (default: kubeflow.image in params)")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, load_params(args.params), args.image, args.pipeline))


if __name__ == "__main__":
    run_cli(main)
