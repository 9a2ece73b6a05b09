"""MLflow plumbing: where the store is, one run per pipeline execution, and the tags every run carries.

Default store: sqlite:///mlflow/mlflow.db with artifacts in mlflow/artifacts, in the project's root
(found from the working directory, see project_root); it moves with the project (relocate_store).
MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one per model file read

import mlflow  # noqa: E402  (after the telemetry switch)
from mlflow.tracking import MlflowClient  # noqa: E402

from components.errors import UserError, shorten  # noqa: E402

if TYPE_CHECKING:
    from components.params import Mlflow

log = logging.getLogger(__name__)

# Tags that find an unfinished run again, so a register that failed half-way resumes its own run.
EXECUTION_TAG = "pipeline_execution"


def project_root() -> Path:
    """The DVC project the embedded store belongs to: DVC_ROOT (set by DVC for every stage; under
    `dvc exp run --temp` or `--queue` it is the user's repository, not DVC's temporary copy), else the
    nearest folder at or above the working directory that holds dvc.yaml, else the working directory."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "dvc.yaml").is_file()), here)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded store of the project (project_root()), as an absolute
    sqlite URI: a store found from the project, so a command run from a sub-folder reads the same store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root() / DEFAULT_TRACKING_URI.removeprefix('sqlite:///')}"


def absolute_tracking_uri() -> str:
    """The tracking URI with a relative sqlite path made absolute, for processes with another working dir."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def configure(http: Mlflow | None = None, create: bool = True) -> str:
    """Point MLflow at the store (MLflow exports it to child processes too); a local sqlite store gets an
    absolute path, so children with another working directory find the same store, and is moved along
    when the project was copied or moved (relocate_store). `http` (params.mlflow) bounds the retries against
    a tracking server; children inherit them too. create=False (readers): a sqlite store that does not
    exist is a UserError naming where it was looked for, rather than a new empty store.
    Raises UserError for a missing store with create=False."""
    uri = absolute_tracking_uri()
    if http is not None:
        # MLflow's own client retries connection errors and 5xx answers with exponential backoff (urllib3);
        # its defaults (7 retries, 120 s timeout) wait minutes on a dead server, so params.yaml bounds them.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(http.http_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(http.http_backoff_s)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(http.http_timeout_s)
    db = _sqlite_file(uri)
    if db is not None and not db.exists():
        if not create and os.environ.get("MLFLOW_TRACKING_URI"):
            raise UserError(
                f"no MLflow store at {db} (MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']}); "
                "point MLFLOW_TRACKING_URI at an existing store"
            )
        if not create:
            raise UserError(
                f"no MLflow store at {db} (the project's embedded store, found from {project_root()}); "
                "run this from the project folder, or set MLFLOW_TRACKING_URI to the store to read"
            )
        db.parent.mkdir(parents=True, exist_ok=True)
        old = [p for p in (db.parent / "artifacts").glob("*") if p.name != "models"] + list(
            (db.parent / "artifacts" / "models").glob("*")
        )
        if old:
            log.warning(
                "%s: not found beside %d runs' and models' files in %s: a new store starts, and champion "
                "history starts over (the old files stay, unregistered)",
                db,
                len(old),
                db.parent / "artifacts",
            )
    elif db is not None:
        relocate_store(db)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if db is not None and create:
        create_sqlite_store(db, uri)
    return uri


def create_sqlite_store(db: Path, uri: str) -> None:
    """Create and migrate a sqlite store once, whatever the number of processes opening it at the same moment
    (parallel `dvc exp run --queue` jobs): MLflow's own migrations race ('table ... already exists'), so the
    first opening happens under an exclusive lock on a file beside the database (fcntl; POSIX)."""
    import fcntl

    with open(db.parent / f".{db.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri, registry_uri=uri).search_registered_models(max_results=1)  # both stores: one schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The columns of MLflow's SQL schema that hold where a run's, a logged model's or a model version's files are.
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate_store(db: Path) -> None:
    """Make an embedded store that was copied or moved (cp -a, mv of the project) point at its own files.

    MLflow records every artifact location as an absolute path. The store's artifacts live in
    `<db folder>/artifacts` (experiment_id creates them there), so when the experiments' recorded location
    is another folder's, every location under that old folder is rewritten to the same path under the new
    one, in one transaction. Without it, models would be read from (and written into) the old place.
    A store that cannot be written (read-only) is left as it is, with a warning."""
    import sqlite3
    from urllib.parse import unquote

    new = (db.parent / "artifacts").resolve().as_uri()
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
            rows = con.execute(
                "SELECT DISTINCT artifact_location FROM experiments WHERE artifact_location LIKE 'file://%/artifacts'"
            ).fetchall()
            # only a store of this layout (<folder>/mlflow.db beside <folder>/artifacts), moved as a whole; an
            # experiment whose artifacts someone put elsewhere on purpose is left alone
            old = [
                location
                for (location,) in rows
                if location != new and location.endswith(f"/{db.parent.name}/artifacts")
            ]
            for location in old:
                # and MLflow's Default experiment, which it creates in `mlruns` of the folder it was first run in
                # (the project's root): <old root>/mlruns, a plain path, to <new root>/mlruns
                old_root = unquote(location.removeprefix("file://"))[: -len(f"/{db.parent.name}/artifacts")]
                new_root = str(db.parent.parent.resolve())
                for before, after in ((location, new), (f"{old_root}/mlruns", f"{new_root}/mlruns")):
                    for table, column in ARTIFACT_COLUMNS:
                        con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                            f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                            (after, len(before) + 1, before, len(before) + 1, before + "/"),
                        )
    except sqlite3.OperationalError as exc:  # read-only, or not (yet) an MLflow store: leave it
        if "readonly" in str(exc) or "read-only" in str(exc):
            log.warning(
                "%s: the store was moved from elsewhere but is read-only; its artifacts cannot be found "
                "until it is opened writable once",
                db,
            )
        return
    if old:
        log.info("%s: the store moved from %s; its artifact locations now point under %s", db, old[0], new)


def experiment_id(name: str) -> str:
    """Get or create the experiment, in the store configure() pointed MLflow at (its callers have); in a local
    sqlite store its artifacts live beside the database."""
    uri = absolute_tracking_uri()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    db = _sqlite_file(uri)
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    try:
        # The kind makes the MLflow UI open this experiment on its training runs, not on its GenAI trace views.
        return MlflowClient().create_experiment(
            name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another registration created it meanwhile
            raise
        created = mlflow.get_experiment_by_name(name)
        if created is None:  # created and deleted again meanwhile
            raise
        return created.experiment_id


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
        [experiment_id_],
        f"tags.{EXECUTION_TAG} = {filter_value(execution)} and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    # resolve_tags adds what mlflow.start_run would: user, source, git commit
    from mlflow.tracking.context.registry import resolve_tags

    run = (
        unfinished[0]
        if unfinished
        else client.create_run(
            experiment_id_, start_time=start_ms, tags=resolve_tags({EXECUTION_TAG: execution}), run_name=run_name
        )
    )
    return mlflow.start_run(run_id=run.info.run_id)


def _server_problem(exc: BaseException) -> str | None:
    """What is wrong with the tracking server, if that is what `exc` says, else None. MLflow's REST client
    reports a server it cannot reach, or one that gave only 5xx answers until its retries ran out, as
    'API request to <url> failed with exception ...', and a refusal as '... failed with error code 401'."""
    import requests

    text = str(exc)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) or (
        isinstance(exc, mlflow.exceptions.MlflowException)
        and text.startswith("API request to")
        and "failed with exception" in text
    ):
        detail = re.search(
            r"too many \d+ error responses|Connection refused|timed out|Name or service not known|"
            r"Failed to resolve|Connection reset|Remote end closed",
            text,
        )
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
        state = "failing" if "error responses" in text else "not reachable"
        return f"is {state} (gave up after {retries} retries: {detail.group(0) if detail else text[:80]})"
    refused = re.search(r"failed with error code (40[13])", text)
    if isinstance(exc, mlflow.exceptions.MlflowException) and refused:
        return (
            f"refused the request (HTTP {refused.group(1)}): check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, the user's permissions, and that the server's --allowed-hosts lists this "
            "host name"
        )
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


# What an MLflow client reads from the environment: the store, and a server's basic-auth credentials (both
# optional). A Kubernetes Secret (kubeflow.mlflow_secret) holds these keys for the tasks and the model server.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


# A registered model version: models:/NAME/VERSION or models:/NAME@ALIAS (MLflow's model URI forms)
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_-]+))")


def parse_model_uri(uri: str, what: str = "--model") -> tuple[str, str | None, str | None]:
    """'models:/NAME/VERSION' -> (NAME, VERSION, None); 'models:/NAME@ALIAS' -> (NAME, None, ALIAS).
    Raises UserError, naming `what` (the option that gave it), for anything else."""
    match = MODEL_URI.fullmatch(uri)
    if match is None:
        raise UserError(
            f"{what + ' ' if what else ''}{shorten(uri)}: write models:/NAME@ALIAS (e.g. models:/NAME@champion) "
            "or models:/NAME/VERSION"
        )
    return match["name"], match["version"], match["alias"]


def model_version(uri: str, what: str = "--model", what_stays: str = "nothing was done"):
    """The registered ModelVersion that models:/NAME/VERSION or models:/NAME@ALIAS names, an alias resolved
    now, in the registry of the current tracking URI. Raises UserError when the URI is malformed or names
    nothing there, or (server_errors) when a tracking server is down."""
    name, version, alias = parse_model_uri(uri, what)
    client = MlflowClient()
    with server_errors(what_stays):
        try:
            if alias is not None:
                return client.get_model_version_by_alias(name, alias)
            return client.get_model_version(name, str(version))
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise
            missing = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise UserError(
                f"registered model {shorten(name)} has no {missing} in {tracking_uri()} "
                f"({' '.join(str(exc.message).split())[:120]}); check {what or 'the model URI'} and "
                "MLFLOW_TRACKING_URI"
            ) from None


def lock_name(name: str, generation: int) -> str:
    """The registered model that is generation `generation` (1, 2, ...) of `name`'s champion lock."""
    return f"{name}.champion-lock.{generation:06d}"


def lock_generations(client: MlflowClient, name: str) -> dict[int, mlflow.entities.model_registry.RegisteredModel]:
    """Every generation of `name`'s champion lock in the registry, by number."""
    pattern = re.compile(re.escape(f"{name}.champion-lock.") + r"(\d{6})")
    found: dict[int, mlflow.entities.model_registry.RegisteredModel] = {}
    token = None
    while True:
        page = client.search_registered_models(
            f"name LIKE {filter_value(name + '.champion-lock.%')}", max_results=100, page_token=token
        )
        found |= {int(m.group(1)): model for model in page if (m := pattern.fullmatch(model.name))}
        token = page.token
        if not token:
            return found


def holder_died_here(holder: str) -> bool:
    """Whether a lock's holder ('<owner> <host> pid <pid> <nonce>') was a process on this host that no longer
    exists (killed; its rerun is here): its lock is free at once, rather than after its lease runs out."""
    parts = holder.split(" ")
    if len(parts) < 4 or parts[1] != socket.gethostname() or parts[2] != "pid" or not parts[3].isdigit():
        return False
    try:
        os.kill(int(parts[3]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class ChampionLock:
    """Held by champion_lock's caller: `generation` of the lock; check() before acting on it."""

    def __init__(self, client: MlflowClient, name: str, generation: int, timeout_s: float):
        self.client, self.name, self.generation, self.timeout_s = client, name, generation, timeout_s
        self.renewed = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._renew, name="champion-lock-lease", daemon=True)

    def _renew(self) -> None:
        # A lease that changes every timeout_s/3 tells waiters the holder is alive, however slow its work.
        beat = 0
        while not self.stop.wait(self.timeout_s / 3):
            beat += 1
            with contextlib.suppress(Exception):  # the server is away: check() will notice
                self.client.update_registered_model(lock_name(self.name, self.generation), description=f"lease {beat}")
                self.renewed = time.monotonic()

    def check(self) -> None:
        """Raises UserError if this holder may have lost the lock: its lease went unrenewed for timeout_s
        (waiters may have judged it dead), or a later generation exists."""
        lost = (
            time.monotonic() - self.renewed > self.timeout_s
            or max(lock_generations(self.client, self.name), default=0) != self.generation
        )
        if lost:
            raise UserError(
                f"lost the champion lock {lock_name(self.name, self.generation)!r} (its lease could not "
                "be renewed in time); nothing was promoted: rerun register"
            )


@contextlib.contextmanager
def champion_lock(name: str, owner: str, timeout_s: float, wait_s: float | None = None) -> Iterator[ChampionLock]:
    """Serialise registrations (and so champion decisions) of one registered model across processes and machines.

    MLflow aliases have no compare-and-set, so two registrations at the same moment could each see the same
    champion and both move the alias. The lock is a registered model `<name>.champion-lock.<n>` (lock_name),
    n a generation number, that exists only while someone holds it. Taking it means seeing generation n
    free - absent, stale, or left by a process of this host that no longer exists (a killed registration
    whose rerun is here) - and creating generation n+1. Creating a registered model whose name exists fails
    atomically in every MLflow backend, so of the waiters that saw the same n exactly one creates n+1; the
    creator then checks that n+1 is the highest generation and that n is still the very lock it saw (same
    holder) or still absent, and backs off otherwise: together, a compare-and-set on the generation, so a
    lock is never taken from a holder that got it in between (a waiter that looked at a generation since
    deleted, or recreated, cannot win). Releasing deletes the holder's own generation, taking over deletes
    the older ones: nothing is left in the registry once everyone is done.

    The holder renews a lease (the model's description) every timeout_s/3 from a thread while it works, so a
    live holder is never taken for dead however slow it is; a generation whose lease has not changed for
    timeout_s, timed by the waiter's own monotonic clock (no clock is compared across machines), is stale.
    A waiter kept out for wait_s (default 2 * timeout_s) by live holders gives up with one line (UserError).
    `owner` (the registration's model_key) is recorded with the holder. Not guarded against: a holder frozen
    (SIGSTOP, a VM pause) for over timeout_s that then wakes and moves the alias before its next check();
    MLflow offers no fencing token to refuse that write.
    """
    client = MlflowClient()
    token = f"{owner} {socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
    wait_s = 2 * timeout_s if wait_s is None else wait_s
    deadline, wait = time.monotonic() + wait_s, 0.2
    first_seen: dict[tuple, float] = {}
    while True:
        generations = lock_generations(client, name)
        head = max(generations, default=0)
        held = generations.get(head)
        free = held is None or holder_died_here(held.tags.get("holder", ""))
        if held is not None and not free:  # stale once its lease has looked the same for timeout_s to this waiter
            lease = (head, held.tags.get("holder"), held.description, held.last_updated_timestamp)
            free = time.monotonic() - first_seen.setdefault(lease, time.monotonic()) > timeout_s
        if free:
            mine = head + 1
            try:
                client.create_registered_model(
                    lock_name(name, mine),
                    description="lease 0",
                    tags={"holder": token, "owner": owner, "purpose": f"held while it moves @champion of {name}"},
                )
            except mlflow.exceptions.MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                continue  # another waiter took generation `mine`: look again
            now = lock_generations(client, name)
            predecessor = now.get(head)
            if max(now, default=0) == mine and (predecessor.tags.get("holder") if predecessor else None) == (
                held.tags.get("holder") if held else None
            ):
                break
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # the lock changed meanwhile
                client.delete_registered_model(lock_name(name, mine))
            continue
        if time.monotonic() > deadline:
            raise UserError(
                f"registered model {lock_name(name, head)!r} is held by another registration that is "
                f"still working ({held.tags.get('holder') if held else '?'}); waited {wait_s:.0f} s "
                "(2 x register.lock_timeout_s): rerun register when it is done"
            )
        time.sleep(wait)
        wait = min(wait * 2, 5.0, max(timeout_s / 4, 0.05))
    lock = ChampionLock(client, name, mine, timeout_s)
    lock.thread.start()
    for old in (n for n in generations if n < mine):  # a stale holder's, or a backed-off waiter's leftovers
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.delete_registered_model(lock_name(name, old))
    try:
        yield lock
    finally:
        lock.stop.set()
        lock.thread.join()
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.delete_registered_model(lock_name(name, mine))


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
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", ".", *ignore], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
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
    return {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "dvc_data_md5": dvc_data_md5(),
        "engine": engine,
        "device": device,
    } | experiment


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
