"""Real servers for the tests that need them: `mlflow server` and a PostgreSQL cluster, on loopback ports.

Each runs in its own process group and is stopped by its PID (an MLflow 3 server forks workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
# Fail fast against a dead or failing server: 2 retries with 1 s backoff, not MLflow's minutes.
QUICK_RETRIES = {"mlflow": {"http_retries": 2, "http_backoff_s": 1, "http_timeout_s": 10}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_store(backend_uri: str) -> None:
    """Create (migrate) a fresh store once, before a multi-worker server races to do it."""
    subprocess.run([BIN / "mlflow", "db", "upgrade", backend_uri], check=True, capture_output=True)


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class MlflowServer:
    """`mlflow server` with the given flags; `url` is what clients use as MLFLOW_TRACKING_URI."""

    def __init__(self, args: list[str], log: Path, port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.args, self.log, self.env = args, log, env or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **self.env}
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Kill the server and its workers (its process group), by the PID we started."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


class Postgres:
    """A throw-away PostgreSQL cluster (Debian's server binaries) on a loopback port."""

    def __init__(self):
        self.bin = postgres_bin()
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to the `postgres` user then
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        self.data = self.dir / "data"

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> Postgres:
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
        )
        return self

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, database: str, script: Path, env: dict) -> None:
        """Run an SQL file as the superuser, as the postgres image's entrypoint runs its init scripts."""
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run(
            [
                *prefix,
                str(self.bin / "psql"),
                "-v",
                "ON_ERROR_STOP=1",
                "--no-psqlrc",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-f",
                str(script),
            ],
            check=True,
            capture_output=True,
            cwd=self.dir,
            env={**os.environ, **env},
        )

    def create_database(self, name: str) -> str:
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def ci_or_skip(reason: str):
    """Where CI promises a tool (.ci/system-deps.sh installs it), its absence fails the test; elsewhere it skips."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it with .ci/system-deps.sh)")
    pytest.skip(reason + "; run `make system-deps` as root")


class ServedModel:
    """`python -m components.serve` (the KServe model server) on a loopback port, in its own process group."""

    def __init__(self, model_uri: str, cwd: Path, env: dict, log: Path, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "components.serve", "--model", model_uri, "--port", str(self.port), *args]
        self.cwd, self.env, self.log = cwd, env, log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> ServedModel:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the model server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the model server was not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body=None, timeout: float = 60) -> tuple[int, object]:
        """(status, parsed JSON or text) of one request; body: JSON-able, or bytes sent as they are."""
        import json

        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
