"""Compile the Kubeflow pipeline to IR YAML.

    python -m pipelines.compile --output pipeline.yaml [--image REGISTRY/digits-mlops:TAG] [--params params.yaml]
"""
import argparse
from pathlib import Path

from kfp import compiler

from components.errors import run_cli
from components.io import atomic_path
from components.params import Params, load_params
from pipelines.pipeline import build_pipeline


def compile_pipeline(output: Path, params: Params, image: str | None = None) -> Path:
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
