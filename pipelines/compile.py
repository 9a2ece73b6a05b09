"""Compile the Kubeflow pipeline to IR YAML.

python -m pipelines.compile --output pipeline.yaml [--image REGISTRY/twinline:TAG] [--params params.yaml]
"""

import argparse
import logging
from pathlib import Path

from kfp import compiler

from components.errors import UserError, run_cli
from components.io import atomic_path
from components.params import Params, check_image, load_params
from pipelines.pipeline import build_pipeline

log = logging.getLogger(__name__)


def compile_pipeline(output: Path, params: Params, image: str | None = None) -> Path:
    """Compile the pipeline for `params` (image: overrides kubeflow.image) to IR YAML at output. An image
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
    pipeline = build_pipeline(params, image)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return output


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Compile the Kubeflow pipeline to IR YAML.")
    parser.add_argument("--output", type=Path, default=Path("pipeline.yaml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--image", help="container image for every task (default: kubeflow.image in params)")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, load_params(args.params), args.image))


if __name__ == "__main__":
    run_cli(main)
