"""Hyperparameter search over train's params (params.yaml `tune`), on the splits `dvc repro augment` prepared.

Optuna runs the trials: TPE sampler (seeded), median pruner on each epoch's validation macro-F1. Each trial is
components.train.fit on outputs/augmented/train.npz and outputs/split/val.npz with the trial's values; its
score is the validation macro-F1 of the epoch train keeps. The study lives in an sqlite file beside the
MLflow store (tune.storage), so a search that was interrupted resumes where it stopped: finished trials stay,
a trial that was running is marked failed (`interrupted`) and its values are tried again. Every trial is an
MLflow child run of one parent run (the study). A failed trial is recorded (FAIL, its error), never fatal.

    python -m pipelines.tune              # run (or resume, or extend to tune.n_trials) the search
    python -m pipelines.tune --apply      # write reports/tune/best.yaml's values into params.yaml
    dvc repro                             # train, evaluate, register the best values (champion gate)

tune.parallelism > 1: that many worker processes share the study's storage, each with cores / parallelism
torch threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from components.errors import UserError, run_cli
from components.params import Params, Tune, load_params, validate_params

log = logging.getLogger(__name__)

TRAIN, VAL = Path("outputs/augmented/train.npz"), Path("outputs/split/val.npz")
BEST = Path("reports/tune/best.yaml")


# ---- the search space -------------------------------------------------------------------------------------


def suggest(trial, tune: Tune) -> dict[str, Any]:
    """One value per tune.space key, from the trial (an optuna.Trial) by the key's distribution. Keys are drawn
    in sorted order: a space that went through a Kubeflow pipeline parameter (a protobuf Struct, keys sorted)
    draws the same values for the same seed."""
    values: dict[str, Any] = {}
    for key, dim in sorted(tune.space.items()):
        if dim.choice is not None:
            # Optuna's categorical choices are None/bool/int/float/str: lists (train.hidden) go as JSON text.
            options = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in dim.choice]
            values[key] = dim.choice[options.index(trial.suggest_categorical(key, options))]
        elif dim.integer is not None:
            values[key] = trial.suggest_int(key, *dim.integer)
        else:
            low, high = dim.uniform or dim.loguniform  # type: ignore[misc]
            values[key] = trial.suggest_float(key, low, high, log=dim.loguniform is not None)
    return values


def set_keys(sections: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of params sections (plain dicts, e.g. {'train': {...}}) with the dotted keys of `values` set
    (e.g. {'train.lr': 0.01}); the sections given are left as they were. Not validated."""
    out = {name: dict(section) if isinstance(section, dict) else section for name, section in sections.items()}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out[section][name] = value
    return out


def with_values(params: Params, values: dict[str, Any], source: str = "tune trial") -> Params:
    """params with the dotted keys of `values` set (e.g. {'train.lr': 0.01}), validated by the schema.
    Raises UserError naming `source` and the key for a value the schema refuses."""
    return validate_params(set_keys(params.model_dump(mode="json", by_alias=True), values), source)


def check_space(params: Params, source: str = "params.yaml") -> None:
    """Every bound and choice of tune.space must be a value the schema takes for its key (the keys were checked
    when params.yaml was read). Raises UserError naming tune.space.<key>."""
    if not params.tune.space:
        raise UserError(
            f"{source}: tune.space is empty; add the keys to search, e.g. train.lr: {{loguniform: [1e-4, 0.1]}}"
        )
    for key, dim in params.tune.space.items():
        candidates = dim.choice or list(dim.uniform or dim.loguniform or dim.integer or ())
        for value in candidates:
            with_values(params, {key: value}, f"{source}: tune.space.{key} ({value!r})")
        if dim.uniform or dim.loguniform:
            low, high = dim.uniform or dim.loguniform  # type: ignore[misc]
            between = low + (high - low) / math.pi  # a fraction, as the sampler draws them
            try:
                with_values(params, {key: between}, "")
            except UserError:
                raise UserError(
                    f"{source}: tune.space.{key}: {'uniform' if dim.uniform else 'loguniform'} draws fractions "
                    f"such as {between:.4g}, which {key} refuses; use int: [{low}, {high}] or choice: [...]"
                ) from None


def study_name(params: Params) -> str:
    """The experiment's name and a digest of what makes trials comparable: the space, the sampler's seed and
    the params a trial starts from, less the searched keys (each trial sets them). Only tune.n_trials (and
    parallelism) and the searched keys' own values in params.yaml may change for a search to resume."""
    base = params.model_dump(mode="json", include={"seed", "data", "split", "augment", "text", "train"})
    for key in params.tune.space:  # every trial sets these itself: applying the best values keeps the study
        section, _, name = key.partition(".")
        base.get(section, {}).pop(name, None)
    digest = hashlib.sha256(
        json.dumps(
            [params.tune.model_dump(mode="json", include={"space", "seed", "objective"}), base], sort_keys=True
        ).encode()
    ).hexdigest()
    return f"{params.mlflow.experiment}-{digest[:8]}"


def storage_url(params: Params) -> str:
    """tune.storage, else sqlite optuna.db beside the MLflow sqlite store (mlflow/optuna.db); with a tracking
    server, the project's mlflow/ folder, where the embedded store would be (a study is one machine's search)."""
    if params.tune.storage:
        return params.tune.storage
    from components.tracking import DEFAULT_TRACKING_URI, absolute_tracking_uri, project_root

    uri = absolute_tracking_uri()
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
    else:
        folder = project_root() / Path(DEFAULT_TRACKING_URI.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def sampler(tune: Tune, worker: int = 0):
    """TPE, seeded (worker i of a parallel search: seed + i, else all workers would sample the same values);
    its first max(2, min(10, n_trials // 3)) trials are random (Optuna's default is 10, most of a short search)."""
    import optuna

    return optuna.samplers.TPESampler(seed=tune.seed + worker, n_startup_trials=max(2, min(10, tune.n_trials // 3)))


def pruner(tune: Tune):
    import optuna

    if not tune.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=tune.pruning_startup_trials, n_warmup_steps=tune.pruning_warmup_epochs
    )


def rdb_storage(url: str):
    """Optuna's RDBStorage at url. An sqlite file runs in WAL mode with synchronous=NORMAL: a trial reports every
    epoch, and the default journal's fsync per commit cost more than a short trial's epoch (SQLite's docs: WAL
    stays consistent after a crash; only the last commits before a power loss can be lost)."""
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 60}} if "sqlite" in url else {}
    )
    if url.startswith("sqlite"):

        def fast_commits(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        sqlalchemy.event.listen(storage.engine, "connect", fast_commits)
        storage.engine.dispose()  # connections opened before the listener are closed, and reopened with it
    return storage


def open_study(params: Params, worker: int = 0):
    """The study (created, or loaded to resume). Raises UserError naming tune.storage when Optuna cannot use it."""
    import optuna

    # A failed trial is logged as one line by the objective: Optuna's own warning carries a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = storage_url(params)
    try:
        return optuna.create_study(
            storage=rdb_storage(url),
            study_name=study_name(params),
            direction="maximize",
            sampler=sampler(params.tune, worker),
            pruner=pruner(params.tune),
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and Optuna's many errors: one line naming the key
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UserError(
            f"tune.storage: Optuna cannot keep its study in {url} ({message}); give an sqlite path or a database "
            "URL whose driver is installed, or move a file that is not Optuna's study out of the way"
        ) from None


# ---- trials ----------------------------------------------------------------------------------------------


def make_objective(params: Params, parent_run: str, experiment: str, source: str = "params.yaml"):
    """The objective of one worker: the splits are read once, each trial trains on them."""
    import numpy as np
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from components.train import epoch_score, fit, load_inputs, resolve_monitor

    train = load_inputs(TRAIN, ("x", "y", "classes"))
    val = load_inputs(VAL, ("x", "y"))
    n_classes = len(train["classes"])
    client = MlflowClient()

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, params.tune)
        run = client.create_run(
            experiment,
            run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": parent_run, "optuna_trial": str(trial.number)},
        )
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        history: list[dict] = []
        pruner_s = 0.0  # time in the callback below: the driver's, not training's

        def report(row: dict) -> None:
            nonlocal pruner_s
            started = time.perf_counter()
            history.append(row)
            trial.report(row["val_macro_f1"], row["epoch"])
            # MedianPruner never prunes before its warm-up epochs: skip its read of every trial there
            prune = row["epoch"] >= params.tune.pruning_warmup_epochs and trial.should_prune()
            pruner_s += time.perf_counter() - started
            if prune:
                raise optuna.TrialPruned(f"epoch {row['epoch']}: val macro-F1 {row['val_macro_f1']} below the median")

        state, status, score, error = "complete", "FINISHED", None, ""
        started = time.perf_counter()
        try:
            cfg = with_values(params, values, f"{source}: tune trial {trial.number}")
            _, history = fit(
                train["x"], train["y"], val["x"], val["y"], n_classes, cfg.train, cfg.seed, params=cfg, on_epoch=report
            )
            monitor = resolve_monitor(cfg.train.monitor, len(val["y"]), n_classes)
            best = max(history, key=lambda r: epoch_score(monitor, r["val_macro_f1"], r["val_loss"]))
            score = float(best["val_macro_f1"])
            return score
        except optuna.TrialPruned:
            state, status = "pruned", "KILLED"
            raise
        except Exception as exc:
            state, status, error = "failed", "FAILED", f"{exc.__class__.__name__}: {exc}"[:500]
            trial.set_user_attr("error", error)
            raise
        except BaseException:  # Ctrl-C or a signal: not a result; its values run again when the search resumes
            state, status = "interrupted", "KILLED"
            trial.set_user_attr("interrupted", True)
            trial.study.enqueue_trial(trial.params)
            raise
        finally:
            # seconds in the train component (fit, less the pruning callback), for benchmarks/tune.py
            trial.set_user_attr("train_s", time.perf_counter() - started - pruner_s)
            metrics = [
                Metric(name, float(row[name]), row["time_ms"], row["epoch"])
                for row in history
                for name in ("train_loss", "val_loss", "val_macro_f1")
                if np.isfinite(row[name])
            ]
            if score is not None:
                metrics.append(Metric("best_val_macro_f1", score, int(time.time() * 1000), 0))
            client.log_batch(
                run.info.run_id,
                metrics=metrics,
                params=[Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in values.items()],
                tags=[RunTag("trial_state", state)] + ([RunTag("error", error)] if error else []),
            )
            client.set_terminated(run.info.run_id, status)
            outcome = f"val macro-F1 {score:.4f}" if score is not None else (error or f"after epoch {len(history)}")
            log.info("trial %d %s: %s %s", trial.number, state, outcome, values)

    return objective


def run_worker(
    params: Params, parent_run: str, experiment: str, n_trials: int, worker: int, source: str = "params.yaml"
) -> None:
    """Run n_trials trials of the study in this process; a trial's failure is recorded, not raised."""
    import torch

    torch.set_num_threads(threads(params.tune.parallelism))
    study = open_study(params, worker)
    study.optimize(make_objective(params, parent_run, experiment, source), n_trials=n_trials, catch=(Exception,))


def threads(parallelism: int) -> int:
    """Torch threads per trial: this machine's cores shared among the parallel trials."""
    return max(1, len(os.sched_getaffinity(0)) // parallelism)


# ---- the search ------------------------------------------------------------------------------------------


def search(params_path: Path, debug: bool = False) -> dict:
    """Run the search of params.yaml's tune section to tune.n_trials trials (resuming its study), record it
    in MLflow, write BEST; return BEST's content. Raises UserError for a bad space or missing splits."""
    import optuna
    from optuna.trial import TrialState

    from components import tracking

    params = load_params(params_path)
    check_space(params, str(params_path))
    for path in (TRAIN, VAL):
        if not path.exists():
            raise UserError(f"{path}: not found; prepare the splits first with `dvc repro augment`")
    tracking.configure(params.mlflow)
    experiment = tracking.experiment_id(params.mlflow.experiment)
    study = open_study(params)
    client = tracking.MlflowClient()
    parent = study.user_attrs.get("mlflow_parent_run")
    if parent is None or not live_run(client, parent):
        parent = client.create_run(
            experiment, run_name=f"tune-{study.study_name}", tags={"optuna_study": study.study_name}
        ).info.run_id
        study.set_user_attr("mlflow_parent_run", parent)
        client.log_batch(
            parent,
            params=[
                mlflow_param(
                    "space", json.dumps(params.tune.model_dump(mode="json", by_alias=True, exclude_none=True)["space"])
                ),
                mlflow_param("objective", params.tune.objective),
                mlflow_param("sampler_seed", str(params.tune.seed)),
                mlflow_param("study", study.study_name),
                mlflow_param("storage", storage_url(params)),
            ],
        )
    else:
        client.update_run(parent, status="RUNNING")
    recover_interrupted(study, client)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    done = sum(not t.user_attrs.get("interrupted") for t in study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, params.tune.n_trials - done)
    log.info("study %s (%s): %d trials done, %d to run", study.study_name, storage_url(params), done, remaining)
    workers = min(params.tune.parallelism, remaining)
    cores = len(os.sched_getaffinity(0))
    if workers > cores:
        log.warning("tune.parallelism %d is above this machine's %d cores: trials will run slower", workers, cores)
    if workers == 1:
        run_worker(params, parent, experiment, remaining, 0, str(params_path))
    elif workers > 1:
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipelines.tune",
                    "--params",
                    str(params_path),
                    "--worker",
                    str(i),
                    "--trials",
                    str(n),
                    "--parent",
                    parent,
                ]
                + (["--debug"] if debug else []),
                env={**os.environ, "OMP_NUM_THREADS": str(threads(workers))},
            )
            for i, n in enumerate(shares)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise UserError(
                f"tune: a worker process exited with {max(codes)}; rerun `python -m pipelines.tune` to resume"
            )
    return summarise(
        params, optuna.load_study(study_name=study.study_name, storage=rdb_storage(storage_url(params))), parent
    )


def live_run(client, run_id: str) -> bool:
    """Whether the study's parent run is still in the store (not deleted, not in another store)."""
    import mlflow

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        return False


def mlflow_param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value[:6000])


def recover_interrupted(study, client) -> None:
    """Trials left RUNNING by a killed search: marked FAIL (user attr `interrupted`), their MLflow runs KILLED,
    and their values queued to be tried again, so they neither count as done nor run twice."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if "mlflow_run_id" in trial.user_attrs:
            client.set_tag(trial.user_attrs["mlflow_run_id"], "trial_state", "interrupted")
            client.set_terminated(trial.user_attrs["mlflow_run_id"], "KILLED")
        if trial.params:
            study.enqueue_trial(trial.params)
        log.warning("trial %d was interrupted: recorded as failed, its values queued again", trial.number)


def summarise(params: Params, study, parent: str) -> dict:
    """BEST (the best trial's values), and the parent run's summary: one point per trial, the best values."""
    from optuna.trial import TrialState

    from components.io import atomic_path
    from components.tracking import MlflowClient

    client = MlflowClient()
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric("trial_val_macro_f1", t.value, now, t.number) for t in complete]
    metrics += [Metric(f"trials_{k}", v, now, 0) for k, v in counts.items() if v]
    if not complete:
        client.log_batch(parent, metrics=metrics)
        client.set_terminated(parent, "FAILED")
        raise UserError(f"tune: no trial finished ({counts}); see the failed trials' `error` in MLflow")
    best = study.best_trial
    values = {key: decode(value) for key, value in best.params.items()}
    result = {
        "study": study.study_name,
        "storage": storage_url(params),
        "objective": params.tune.objective,
        "value": best.value,
        "trial": best.number,
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        "trials": counts,
        "params": values,
    }
    with atomic_path(BEST) as tmp:
        tmp.write_text(yaml.safe_dump(result, sort_keys=False))
    metrics.append(Metric("best_val_macro_f1", best.value, now, 0))
    client.log_batch(parent, metrics=metrics, tags=[tag("best_trial", str(best.number))])
    client.log_artifact(parent, str(BEST))
    client.log_figure(parent, trials_figure(trials), "trials.png")
    client.set_terminated(parent, "FINISHED")
    log.info(
        "best trial %d: %s = %.4f with %s (written to %s)", best.number, params.tune.objective, best.value, values, BEST
    )
    return result


def tag(key: str, value: str):
    from mlflow.entities import RunTag

    return RunTag(key, value)


def decode(value: Any) -> Any:
    """A categorical choice that was a list (sent to Optuna as JSON text) back to the list."""
    if isinstance(value, str) and value.startswith("["):
        return json.loads(value)
    return value


def trials_figure(trials):
    """Each trial's score (the objective) by trial number, coloured by state, the best so far as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for state, colour in ((TrialState.COMPLETE, "tab:blue"), (TrialState.PRUNED, "tab:orange")):
        shown = [t for t in trials if t.state == state]
        if not shown:
            continue
        scores = [t.value if t.value is not None else max(t.intermediate_values.values(), default=0) for t in shown]
        ax.scatter([t.number for t in shown], scores, c=colour, label=state.name.lower())
    done = sorted((t.number, t.value) for t in trials if t.state == TrialState.COMPLETE)
    best, line = -1.0, []
    for number, value in done:
        best = max(best, value)
        line.append((number, best))
    if line:
        ax.step(*zip(*line, strict=True), where="post", c="k", lw=1, label="best so far")
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    if failed:
        ax.scatter(failed, [0] * len(failed), c="tab:red", marker="x", label="failed")
    ax.set(xlabel="trial", ylabel="validation macro-F1", title="tuning trials")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ---- the Kubeflow tuning pipeline's trials (pipelines/tune_pipeline.py) --------------------------------------


def sample_up_front(tune: Tune) -> list[dict]:
    """tune.n_trials configurations drawn before any trial runs (Optuna's RandomSampler, seeded with tune.seed):
    [{"trial": i, "values": {dotted key: value}}]. TPE would learn nothing here, as no score exists yet."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=tune.seed))
    trials = []
    for number in range(tune.n_trials):
        trials.append({"trial": number, "values": suggest(study.ask(), tune)})  # JSON: a pipeline parameter
    return trials


def run_trial_files(train_path: Path, val_path: Path, sections: dict, trial: dict, out: dict[str, Path]) -> float:
    """One trial of the Kubeflow tuning pipeline: components.train.train_files with trial["values"] set in the
    sections (seed, data, text, train); returns the validation macro-F1 train keeps, or -1.0 when the trial
    failed. out: model, info, history, timing (train's files; empty for a failed trial) and result, a JSON
    {trial, values, score, error, weights_hash} written in every case."""
    from components.io import write_json
    from components.train import train_files

    error, score, weights = "", -1.0, ""
    try:
        params = with_values(Params.model_validate(sections), trial["values"], f"tune trial {trial['trial']}")
        info = train_files(train_path, val_path, params, out["model"], out["info"], out["history"], None, out["timing"])
        assert info is not None  # a single process is rank 0
        score, weights = float(info["best_val_macro_f1"]), info["weights_hash"]
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        error = f"{exc.__class__.__name__}: {exc}"[:500]
        log.warning("trial %s failed: %s", trial["trial"], error)
        for key in ("model", "info", "history", "timing"):
            if not out[key].exists():
                out[key].write_bytes(b"")
    write_json(out["result"], {**trial, "score": score, "error": error, "weights_hash": weights})
    return score


def pick_best(results: list[Path], infos: list[Path], sections: dict, best_path: Path) -> tuple[int, dict, float]:
    """The index of the best finished trial among `results` (run_trial_files' JSON; infos: its train_info,
    in the same order, checked by the weights hash), the text and train sections with its values, and its
    score; writes every result and the pick to best_path. Raises UserError when no trial finished."""
    from components.io import read_json, write_json

    trials = [read_json(path) for path in results]
    for trial, info in zip(trials, infos, strict=True):
        if not trial["error"] and read_json(info)["weights_hash"] != trial["weights_hash"]:
            raise UserError(f"trial {trial['trial']}: its model and its result are out of order; rerun the pipeline")
    finished = [i for i, trial in enumerate(trials) if not trial["error"]]
    if not finished:
        raise UserError(f"no trial finished: {trials[0]['error'] if trials else 'no trials'}")
    chosen = max(finished, key=lambda i: (trials[i]["score"], -trials[i]["trial"]))
    chosen_sections = set_keys(sections, trials[chosen]["values"])  # values the trial's train validated
    write_json(best_path, {"best": trials[chosen], "trials": trials})
    return chosen, chosen_sections, trials[chosen]["score"]


# ---- applying the best values ----------------------------------------------------------------------------


def apply_best(params_path: Path, best_path: Path = BEST) -> dict[str, Any]:
    """Write the best trial's values into params.yaml in place (comments and layout kept, ruamel.yaml's round
    trip), after checking the result against the schema. Returns the values. Raises UserError if best_path
    is missing, was found by another study than params_path's (study_name), or a value is refused."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.util import load_yaml_guess_indent

    from components.io import atomic_path

    if not best_path.exists():
        raise UserError(f"{best_path}: not found; run the search first (python -m pipelines.tune)")
    try:
        best = yaml.safe_load(best_path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{best_path}: not YAML ({str(exc).splitlines()[0]}); rerun the search") from None
    if not isinstance(best, dict) or not isinstance(best.get("params"), dict):
        raise UserError(f"{best_path}: not a search's result (no params mapping); rerun the search")
    params = load_params(params_path)
    if best.get("study") != study_name(params):
        # The study's digest covers the space, the sampler's seed and the params trials start from: the values
        # were best for another search, or params.yaml changed since (data, splits, other train keys).
        raise UserError(
            f"{best_path}: found by study {best.get('study')}, but {params_path} now describes study "
            f"{study_name(params)} (another tune section, seed, data or base params); run the search for it "
            f"first: python -m pipelines.tune --params {params_path}"
        )
    values = best["params"]
    with_values(params, values, f"{best_path}")
    doc = YAML()  # round trip: comments, order and quoting stay
    doc.preserve_quotes = True
    doc.width = 4096
    doc.representer.add_representer(  # null stays `null`, not an empty value
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    text = params_path.read_text()
    _, sequence_indent, dash_offset = load_yaml_guess_indent(text)  # the file's own layout ("  key:\n    - item")
    doc.indent(mapping=2, sequence=sequence_indent or 2, offset=dash_offset or 0)
    tree = doc.load(text)
    for key, value in values.items():
        section, _, name = key.partition(".")
        if tree.get(section) is None:
            tree[section] = CommentedMap()
        if isinstance(value, list):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()
            value = seq
        tree[section][name] = value
    with atomic_path(params_path) as tmp, open(tmp, "w") as fh:
        doc.dump(tree, fh)
    load_params(params_path)
    return values


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Hyperparameter search over params.yaml's tune.space.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--apply", action="store_true", help=f"write {BEST}'s values into --params")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a parallel search's worker process
    parser.add_argument("--trials", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parent", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.apply:
        values = apply_best(args.params)
        print(f"{args.params}: set {', '.join(f'{k} = {v}' for k, v in values.items())}; now run `dvc repro`")
    elif args.worker is not None:
        from components import tracking

        params = load_params(args.params)
        tracking.configure(params.mlflow)
        experiment = tracking.experiment_id(params.mlflow.experiment)
        run_worker(params, args.parent, experiment, args.trials, args.worker, str(args.params))
    else:
        result = search(args.params)
        print(f"best trial {result['trial']}: {result['objective']} {result['value']:.4f} {result['params']}")
        print(f"written to {BEST}; apply it with `python -m pipelines.tune --apply`, then `dvc repro`")


if __name__ == "__main__":
    run_cli(main)
