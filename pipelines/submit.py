"""Compile the pipeline and submit a run to a Kubeflow Pipelines API server.

    python -m pipelines.submit --host https://kubeflow.example.com/pipeline [--namespace NS] \
        [--experiment NAME] [--run-name NAME] [--image REF] [--param train.epochs=40 --param dvc_rev=v1.2 ...]

--param takes a pipeline parameter (data_uri, dvc_repo, dvc_rev, dvc_path, seed, deploy) or a dotted
params.yaml key (train.epochs=40, serve.canary_percent=10), checked by the params schema before anything
is sent. deploy=false skips rolling a promoted champion out to KServe.
Token: $KFP_TOKEN, else the in-cluster service-account token, else none (e.g. a port-forward).
"""

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from components.errors import UserError, run_cli
from components.params import Params, load_params, validate_params
from pipelines.compile import compile_pipeline

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
SOURCE_PARAMS = ("data_uri", "dvc_repo", "dvc_rev", "dvc_path")
SECTIONS = (
    "data",
    "clean",
    "split",
    "normalise",
    "augment",
    "text",
    "train",
    "evaluate",
    "register",
    "mlflow",
    "serve",
)


def apply_overrides(params: Params, overrides: list[str]) -> tuple[Params, dict]:
    """KEY=VALUE overrides -> (params with them applied, the pipeline's arguments). Keys are pipeline
    parameters or params.yaml keys, validated by the schema; kubeflow.* and train.gpus shape the
    compiled spec itself (image, resources, GPUs), the rest become run arguments."""
    raw = params.model_dump(mode="json", exclude_none=True)
    source: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--param {item!r}: expected KEY=VALUE, e.g. train.epochs=40")
        value = yaml.safe_load(text) if text else ""
        if key in SOURCE_PARAMS:
            source[key] = str(value)
            continue
        if key == "deploy":
            if not isinstance(value, bool):
                raise UserError(f"--param deploy={text}: write deploy=true or deploy=false")
            source[key] = value
            continue
        *parents, leaf = key.split(".")
        if (parents[:1] or [leaf])[0] not in SECTIONS + ("seed", "kubeflow"):
            raise UserError(
                f"--param {key}: not a pipeline parameter; use one of {', '.join(SOURCE_PARAMS)}, "
                f"seed, deploy, or a params.yaml key under {', '.join(SECTIONS + ('kubeflow',))}"
            )
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    params = validate_params(raw, "--param")
    checked = params.model_dump(mode="json", exclude_none=True)
    return params, source | {"seed": checked["seed"]} | {name: checked[name] for name in SECTIONS}


def pin_revision(repo: str, rev: str) -> str:
    """A branch or tag -> its commit, so KFP's cache (keyed on the arguments) never serves an old fetch
    for a moving branch. A commit stays as it is; if the repo cannot be asked, the name is kept."""
    import re
    import subprocess

    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    try:
        out = subprocess.run(
            ["git", "ls-remote", repo, rev or "HEAD"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if not out:
        print(
            f"warning: could not resolve {repo}@{rev or 'HEAD'} to a commit; KFP may reuse a cached fetch",
            file=sys.stderr,
        )
        return rev
    return out[0]


def token() -> str | None:
    if os.environ.get("KFP_TOKEN"):
        return os.environ["KFP_TOKEN"]
    return SERVICE_ACCOUNT_TOKEN.read_text().strip() if SERVICE_ACCOUNT_TOKEN.exists() else None


def submit(
    host: str,
    params_path: Path,
    overrides: list[str],
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    image: str | None = None,
    service_account: str | None = None,
) -> str:
    """Returns the run's URL in the Kubeflow Pipelines UI."""
    import kfp

    params, arguments = apply_overrides(load_params(params_path), overrides)
    if arguments.get("dvc_repo"):
        arguments["dvc_rev"] = pin_revision(arguments["dvc_repo"], arguments.get("dvc_rev", ""))
    with tempfile.TemporaryDirectory() as tmp, api_errors(host):
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token())
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", params, image)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            namespace=namespace,
            experiment_name=experiment or params.mlflow.experiment,
            service_account=service_account,
        )
    return f"{host.rstrip('/')}/#/runs/details/{result.run_id}"


@contextlib.contextmanager
def api_errors(host: str):
    """The KFP client's connection and HTTP errors as one line saying what to check."""
    import warnings

    import urllib3
    from kfp_server_api.exceptions import ApiException

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    # its retry warnings would bury the one line (kfp resets the level of "urllib3" itself, not of this child)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        yield
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        cause = str(reason).rsplit(": ", 1)[-1].strip(" \"')") or exc.__class__.__name__
        raise UserError(
            f"Kubeflow Pipelines at {host} is not reachable ({cause}); check --host (e.g. "
            "https://HOST/pipeline, or http://localhost:8080 after `kubectl port-forward -n kubeflow "
            "svc/ml-pipeline-ui 8080:80`)"
        ) from None
    except ApiException as exc:
        what = "check the token ($KFP_TOKEN) and --namespace" if exc.status in (401, 403) else "check --host"
        raise UserError(f"Kubeflow Pipelines at {host} answered HTTP {exc.status} {exc.reason}; {what}") from None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="Compile the pipeline and submit one run to Kubeflow Pipelines; prints the run's URL.",
        epilog="Authentication: the bearer token comes from $KFP_TOKEN, else from the in-cluster service account "
        f"({SERVICE_ACCOUNT_TOKEN}), else none (e.g. through kubectl port-forward). The token is never "
        "a command-line argument, so it stays out of shell history and process lists.",
    )
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://HOST/pipeline")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument("--experiment", help="KFP experiment (default: mlflow.experiment from params)")
    parser.add_argument("--run-name", help="name of the run in the KFP UI (default: KFP's, from the pipeline and time)")
    parser.add_argument("--image", help="container image for every task (default: kubeflow.image)")
    parser.add_argument("--service-account", help="run the pods as this service account, e.g. pipeline-runner")
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="the params file whose values become the run's defaults (default: params.yaml)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, repeatable: a pipeline parameter (data_uri, dvc_repo, dvc_rev, "
        "dvc_path, seed) or a params.yaml key such as train.epochs=40, checked against the schema",
    )
    args = parser.parse_args(argv)
    print(
        submit(
            args.host,
            args.params,
            args.param,
            args.namespace,
            args.experiment,
            args.run_name,
            args.image,
            args.service_account,
        )
    )


if __name__ == "__main__":
    run_cli(main)
