"""MLflow plumbing: where the store is, one run per pipeline execution, and the tags every run carries.

Default store: sqlite:///mlflow/mlflow.db with artifacts in mlflow/artifacts, relative to the project
root (where DVC runs the stages). MLFLOW_TRACKING_URI overrides it.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import yaml

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402  (after the telemetry switch)
from mlflow.tracking import MlflowClient  # noqa: E402

from components.errors import UserError  # noqa: E402

if TYPE_CHECKING:
    from components.params import Mlflow

# Tags that find an unfinished run again, so a register that failed half-way resumes its own run.
EXECUTION_TAG = "pipeline_execution"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded store under the DVC project's root. DVC sets DVC_ROOT for every
    stage, and under `dvc exp run --temp` or `--queue` points it at the user's repository rather than at
    DVC's temporary copy, where a relative store would be thrown away with the copy."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = os.environ.get("DVC_ROOT")
    return f"sqlite:///{Path(root).resolve() / DEFAULT_TRACKING_URI.removeprefix('sqlite:///')}" if root \
        else DEFAULT_TRACKING_URI


def absolute_tracking_uri() -> str:
    """The tracking URI with a relative sqlite path made absolute, for processes with another working dir."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def configure(http: "Mlflow | None" = None) -> str:
    """Point MLflow at the store (MLflow exports it to child processes too); a local sqlite store gets its
    folder created and an absolute path, so children with another working directory find the same store.
    `http` (params.mlflow) bounds the retries against a tracking server; children inherit them too."""
    uri = absolute_tracking_uri()
    if http is not None:
        # MLflow's own client retries connection errors and 5xx answers with exponential backoff (urllib3);
        # its defaults (7 retries, 120 s timeout) wait minutes on a dead server, so params.yaml bounds them.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(http.http_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(http.http_backoff_s)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(http.http_timeout_s)
    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """Get or create the experiment; in a local sqlite store its artifacts live beside the database."""
    uri = configure()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    db = _sqlite_file(uri)
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    try:
        # The kind makes the MLflow UI open this experiment on its training runs, not on its GenAI trace views.
        return MlflowClient().create_experiment(name, artifact_location=location,
                                                tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":      # another registration created it meanwhile
            raise
        return mlflow.get_experiment_by_name(name).experiment_id


def filter_value(value: str) -> str:
    """`value` quoted for an MLflow search filter (search_runs, search_model_versions, ...), which has no
    escape character: in single quotes, or in double quotes when it holds a single quote. Every value
    pasted into a filter goes through this. Raises UserError for a value holding both kinds of quote."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    from components.errors import shorten
    raise UserError(f"{shorten(value)} holds both ' and \", which an MLflow search filter cannot quote; rename it")


def start_execution_run(experiment: str, execution: str, run_name: str, start_ms: int | None) -> mlflow.ActiveRun:
    """The MLflow run that registers one model (`execution`: its model_key), dated from when training started
    (start_ms, ms since the epoch; None: now). A run for the same model that did not finish (the server
    went away, the process was killed) is resumed, not duplicated."""
    experiment_id_ = experiment_id(experiment)
    client = MlflowClient()
    unfinished = client.search_runs(
        [experiment_id_], f"tags.{EXECUTION_TAG} = {filter_value(execution)} and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    # resolve_tags adds what mlflow.start_run would: user, source, git commit
    from mlflow.tracking.context.registry import resolve_tags
    run = unfinished[0] if unfinished else client.create_run(
        experiment_id_, start_time=start_ms, tags=resolve_tags({EXECUTION_TAG: execution}), run_name=run_name)
    return mlflow.start_run(run_id=run.info.run_id)


def _server_problem(exc: BaseException) -> str | None:
    """What is wrong with the tracking server, if that is what `exc` says, else None. MLflow's REST client
    reports a server it cannot reach, or one that gave only 5xx answers until its retries ran out, as
    'API request to <url> failed with exception ...', and a refusal as '... failed with error code 401'."""
    import requests
    text = str(exc)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) or (
            isinstance(exc, mlflow.exceptions.MlflowException) and text.startswith("API request to")
            and "failed with exception" in text):
        detail = re.search(r"too many \d+ error responses|Connection refused|timed out|Name or service not known|"
                           r"Failed to resolve|Connection reset|Remote end closed", text)
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
        state = "failing" if "error responses" in text else "not reachable"
        return f"is {state} (gave up after {retries} retries: {detail.group(0) if detail else text[:80]})"
    refused = re.search(r"failed with error code (40[13])", text)
    if isinstance(exc, mlflow.exceptions.MlflowException) and refused:
        return (f"refused the request (HTTP {refused.group(1)}): check MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, the user's permissions, and that the server's --allowed-hosts lists this "
                "host name")
    return None


@contextlib.contextmanager
def server_errors(what_stays: str) -> Iterator[None]:
    """Turn a tracking server that is down, failing or refusing (after MLflow's bounded retries) into one line
    that names the server and says what to do; other errors pass through unchanged."""
    try:
        yield
    except Exception as exc:
        problem = _server_problem(exc) if tracking_uri().startswith(("http://", "https://")) else None
        if problem is None:
            raise
        raise UserError(f"MLflow tracking server {tracking_uri()} {problem}; {what_stays}") from None


@contextlib.contextmanager
def champion_lock(name: str, owner: str, timeout_s: int) -> Iterator[None]:
    """Serialise champion decisions for one registered model across processes and machines.

    MLflow aliases have no compare-and-set, so two registrations at the same moment could each see the same
    champion and both move the alias. The lock is a registered model `<name>.champion-lock`: creating one
    that exists fails atomically in every MLflow backend, so one holder decides at a time. Its description
    names the holder: `owner` (the pipeline execution) first, so a lock left behind by an earlier attempt of
    the same execution (killed, or its server went away) is taken over at once; any other lock older than
    `timeout_s` is taken to be a killed process's and broken.
    """
    client = MlflowClient()
    lock = f"{name}.champion-lock"
    token = (f"{owner} {socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}: "
             f"held while it moves @champion of {name}; deleted when done")
    deadline, wait = time.monotonic() + timeout_s, 0.2
    while True:
        try:
            client.create_registered_model(lock, description=token)
            break
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except mlflow.exceptions.MlflowException:
            continue                                    # released meanwhile: try again
        if held.description == token:                   # our create, retried by the client after a lost answer
            break
        left_by_this_execution = (held.description or "").split(" ")[0] == owner
        if left_by_this_execution or time.time() - held.creation_timestamp / 1000 > timeout_s:
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise UserError(f"registered model '{lock}' has been held for over {timeout_s} s by another registration "
                            f"({held.description}); if none is running, delete '{lock}' in MLflow and rerun register")
        time.sleep(wait)
        wait = min(wait * 2, 5.0)
    try:
        yield
    finally:
        # only our own lock: a holder that was too slow may have had it broken and taken by another
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            if client.get_registered_model(lock).description == token:
                client.delete_registered_model(lock)


def dvc_outputs(dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """Every path a stage of dvc.yaml writes (outs, metrics and plots), plus dvc.lock: the files DVC
    rewrites itself, which say nothing about what the user changed. [] without a readable dvc.yaml."""
    try:
        stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return []
    paths = ["dvc.lock"]
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                paths.append(entry if isinstance(entry, str) else next(iter(entry)))
    return [path for path in paths if "${" not in path]


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the working tree, or ('unknown', False) outside git. Dirty means a change the
    user made (code, params, dvc.yaml, data pointers, a new file git does not ignore), not one DVC made:
    dvc.lock and the stages' own outputs are rewritten by every `dvc repro` before register looks."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        ignore = [f":(exclude){path}" for path in dvc_outputs()]
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", ".", *ignore],
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def dvc_data_md5(dvc_file: str | Path = "data.dvc") -> str:
    """The md5 DVC recorded for the raw data, so a model can be traced to the exact data it saw."""
    try:
        return str(yaml.safe_load(Path(dvc_file).read_text())["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


# Set by `dvc exp run` in every stage's environment (dvc/repo/experiments/queue/base.py).
DVC_EXPERIMENT_ENV = {"dvc_exp_name": "DVC_EXP_NAME", "dvc_exp_baseline_rev": "DVC_EXP_BASELINE_REV"}


def lineage_tags(device: str, engine: str = "dvc") -> dict[str, str]:
    """Where a run comes from: git commit and whether the user's sources differed from it, the raw data's
    DVC md5, the engine and device, and, under `dvc exp run`, the experiment's name and baseline commit."""
    commit, dirty = git_commit()
    experiment = {tag: os.environ[var] for tag, var in DVC_EXPERIMENT_ENV.items() if os.environ.get(var)}
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "dvc_data_md5": dvc_data_md5(),
            "engine": engine, "device": device} | experiment


def run_name(lineage: dict[str, str], params_hash: str) -> str:
    """What the run is: the DVC experiment's name, else commit (+ '-dirty') and params digest, e.g.
    '3f9c2e1-5a0b7c3d'; outside git the engine takes the commit's place ('kubeflow-5a0b7c3d')."""
    if "dvc_exp_name" in lineage:
        return lineage["dvc_exp_name"]
    commit = lineage["git_commit"][:7] if lineage["git_commit"] != "unknown" else lineage["engine"]
    return f"{commit}{'-dirty' if lineage['git_dirty'] == 'true' else ''}-{params_hash[:8]}"


def flatten(prefix: str, value: object) -> dict[str, object]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}, as MLflow params are flat."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, sub in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return flat
    return {prefix: value}
