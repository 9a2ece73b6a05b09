"""The champion lock holds under contention: several waiters find the same stale lock at once, with a delay
injected at the worst point (between seeing it free and taking it), and holders slower than the lock's
timeout; at most one holds it at any moment, on a real sqlite store and a real MLflow server."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest

from components import tracking
from servers import MlflowServer, create_store

TIMEOUT_S = 1.0  # the lease: renewed every TIMEOUT_S / 3, stale after TIMEOUT_S unrenewed
HOLD_S = 2.5  # each holder works for longer than the timeout: it must not be broken into
WAITERS = 4


def contend(monkeypatch, uri: str) -> list[tuple[float, float, str]]:
    """WAITERS threads take `m`'s champion lock after a killed holder left one behind; each holds it HOLD_S.
    Returns every holder's (entered, left, name), monotonic seconds."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure()
    client = mlflow.MlflowClient()
    client.create_registered_model(
        tracking.lock_name("m", 1), description="lease 0", tags={"holder": "a killed registration", "owner": "killed"}
    )
    create = mlflow.MlflowClient.create_registered_model

    def slow_create(self, name, *args, **kwargs):
        if ".champion-lock." in name:
            time.sleep(0.3)  # the worst point: every waiter has judged the lock free, none has taken it
        return create(self, name, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "create_registered_model", slow_create)

    held, errors, start = [], [], threading.Barrier(WAITERS)

    def waiter(i: int) -> None:
        try:
            start.wait()
            with tracking.champion_lock("m", f"execution-{i}", TIMEOUT_S, wait_s=60) as lock:
                entered = time.monotonic()
                time.sleep(HOLD_S)
                lock.check()
                held.append((entered, time.monotonic(), f"execution-{i}"))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(WAITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return sorted(held)


def assert_one_holder_at_a_time(held: list[tuple[float, float, str]]) -> None:
    assert len(held) == WAITERS, f"every waiter got the lock in the end: {held}"
    for (_, left, first), (entered, _, second) in zip(held, held[1:], strict=False):
        assert entered >= left, f"{second} entered while {first} held the lock"


def test_at_most_one_holder_on_a_sqlite_store(monkeypatch, tmp_path):
    held = contend(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert_one_holder_at_a_time(held)
    assert tracking.lock_generations(mlflow.MlflowClient(), "m") == {}, "nothing left once everyone is done"


def test_at_most_one_holder_on_a_real_mlflow_server(monkeypatch, tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    create_store(backend)
    server = MlflowServer(
        ["--backend-store-uri", backend, "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "2"],
        tmp_path / "server.log",
    ).start()
    try:
        assert_one_holder_at_a_time(contend(monkeypatch, server.url))
    finally:
        server.stop()


def test_a_waiter_gives_up_with_one_line_while_a_live_holder_works(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.configure()
    with (
        tracking.champion_lock("m", "first", 0.6),
        pytest.raises(tracking.UserError, match=r"is held by another registration that is still working"),
        tracking.champion_lock("m", "second", 0.6),
    ):
        pass


def test_the_same_model_registered_three_times_at_once_is_one_version(tmp_path):
    """DVC and Kubeflow (or parallel `dvc exp run --queue` jobs) registering the same model at the same
    moment: they take turns, the later ones find the first one's version and reuse it."""
    import json
    import subprocess
    import sys

    import yaml

    from conftest import make_project

    project = make_project(
        tmp_path / "project", per_class=20, params={"train": {"epochs": 2}, "register": {"min_macro_f1": 0.0}}
    )
    project.repro("evaluate")
    cmd = yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"]["register"]["cmd"].split()[1:]
    racing = [
        subprocess.Popen(
            [
                sys.executable,
                *[f"reports/registration-{i}.json" if arg == "reports/registration.json" else arg for arg in cmd],
            ],
            cwd=project.root,
            env=project.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [process.communicate(timeout=300)[1] for process in racing]
    assert [process.returncode for process in racing] == [0, 0, 0], errors
    registrations = [json.loads((project.root / f"reports/registration-{i}.json").read_text()) for i in range(3)]
    assert registrations[0] == registrations[1] == registrations[2] and registrations[0]["version"] == "1"
    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient(registry_uri=project.env["MLFLOW_TRACKING_URI"])
    assert len(client.search_model_versions("name = 'digits-classifier'")) == 1
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"], "one run, finished"
