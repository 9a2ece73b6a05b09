"""The cluster's MLflow server configuration, run for real: the Deployment in k8s/base/mlflow.yaml (its init
container's auth config, its flags and env) against a real PostgreSQL, with basic auth and allowed hosts;
two registrations at the same moment; and a backend that fails, so the server answers 5xx."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode

import mlflow
import pytest
import yaml

from components.tracking import lock_name
from conftest import REPO, make_project, run_id_of
from servers import QUICK_RETRIES, MlflowServer, Postgres, ci_or_skip, create_store, postgres_bin, wait_for

ADMIN_PASSWORD = secrets.token_hex(12)


def pod_spec() -> dict:
    docs = yaml.safe_load_all((REPO / "k8s/base/tracking/mlflow.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]


def container_env(container: dict, secret_values: dict) -> dict:
    """The container's env as the kubelet would set it, with Secret keys taken from `secret_values`."""
    return {
        item["name"]: item["value"] if "value" in item else secret_values[item["valueFrom"]["secretKeyRef"]["key"]]
        for item in container.get("env", [])
    }


@pytest.fixture(scope="module")
def postgres():
    if postgres_bin() is None:
        ci_or_skip("PostgreSQL's server binaries are not installed")
    cluster = Postgres().start()
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop()
    cluster.remove()


@pytest.fixture(scope="module")
def shared_server(postgres, tmp_path_factory):
    """`mlflow server` exactly as the Deployment runs it, but on loopback and with local folders."""
    root = tmp_path_factory.mktemp("shared")
    postgres.create_database("mlflow")
    # what the postgres image's entrypoint runs on first start: MLflow's own role, owning its database
    db_password = secrets.token_hex(12)
    postgres.psql("mlflow", REPO / "k8s/base/tracking/postgres-initdb.sql", env={"MLFLOW_DB_PASSWORD": db_password})
    secret_values = {
        "MLFLOW_DB_PASSWORD": db_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    pod = pod_spec()

    def on_loopback(env: dict) -> dict:  # the Service name `postgres` is the test's cluster here
        return {key: value.replace("@postgres:5432/", f"@127.0.0.1:{postgres.port}/") for key, value in env.items()}

    # the init container writes basic_auth.ini pointing the user store at the same PostgreSQL database
    init = pod["initContainers"][0]
    auth_ini = root / "basic_auth.ini"
    script = init["command"][-1].replace("/etc/mlflow-auth/basic_auth.ini", str(auth_ini))
    subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **on_loopback(container_env(init, secret_values))},
        check=True,
    )
    server = pod["containers"][0]
    args = list(server["args"])
    for flag in ("--host", "--port"):  # MlflowServer binds 127.0.0.1 and a free port instead
        del args[args.index(flag) : args.index(flag) + 2]
    args[args.index("--artifacts-destination") + 1] = str(root / "mlartifacts")
    env = on_loopback(container_env(server, secret_values)) | {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "HOME": str(root),
    }
    os.environ["PGPASSWORD"] = db_password  # migrate once, as the mlflow role, before the workers start
    create_store(env["MLFLOW_BACKEND_STORE_URI"])
    running = MlflowServer(args, root / "server.log", env=env).start(timeout=180)
    yield running
    running.stop()


def request(url: str, auth: bool = True, host: str | None = None) -> int:
    headers = {"Authorization": "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()} if auth else {}
    if host:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def pipeline_env(project, server: MlflowServer) -> dict:
    """What the Kubeflow register task gets from the mlflow-credentials Secret."""
    return project.env | {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }


def client_for(server: MlflowServer) -> mlflow.MlflowClient:
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    return mlflow.MlflowClient(server.url, registry_uri=server.url)


def test_the_cluster_configuration_serves_from_postgresql_with_auth_and_host_checks(shared_server, postgres):
    search = f"{shared_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert request(f"{shared_server.url}/health", auth=False) == 200
    assert request(search, auth=False) == 401, "basic auth is on"
    assert request(search) == 200
    assert request(search, host="evil.example:5000") == 403, "Host headers outside --allowed-hosts are refused"
    assert request(search, host="mlflow.twinline.svc.cluster.local:5000") == 200, "the in-cluster service name"
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user="postgres", dbname="mlflow") as db:
        cursor = db.cursor()
        cursor.execute("select table_name from information_schema.tables where table_schema = 'public'")
        tables = {row[0] for row in cursor.fetchall()}
        cursor.execute("select distinct tableowner from pg_tables where schemaname = 'public'")
        owners = {row[0] for row in cursor.fetchall()}
    assert {"experiments", "runs", "registered_models", "model_versions", "users"} <= tables, (
        "tracking, registry and auth stores all live in PostgreSQL"
    )
    assert owners == {"mlflow"}, "MLflow works as its own role, not the superuser"


def test_two_registrations_at_the_same_moment_leave_one_champion_the_better(shared_server, tmp_path):
    """Both versions exist, exactly one holds @champion, and it is the better one."""
    lenient = {"register": {"min_macro_f1": 0.0}}  # both pass the threshold: the comparison decides
    strong = make_project(tmp_path / "strong", params=lenient)
    weak = make_project(
        tmp_path / "weak", params=lenient | {"augment": {"copies": 0}, "train": {"epochs": 1, "width": 4}}
    )
    for project in (strong, weak):
        project.repro("evaluate")  # training needs no MLflow at all
    f1 = {p: p.json("reports/metrics.json")["macro_f1"] for p in (strong, weak)}
    assert f1[strong] - f1[weak] > 0.2, f"the test needs clearly different models, got {f1}"

    # Hold the champion lock, as a registration in progress elsewhere would, so both arrive at register
    # together; they must wait for it (no version, no alias meanwhile), then register one after the other.
    client = client_for(shared_server)
    held = lock_name("digits-classifier", 1)
    client.create_registered_model(held, description="the test: held", tags={"holder": "the test"})
    racing = [
        subprocess.Popen(
            ["dvc", "repro"],
            cwd=p.root,
            env=pipeline_env(p, shared_server),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in (strong, weak)
    ]
    wait_for(
        lambda: all((p.root / "reports" / "metrics.json").exists() for p in (strong, weak)),
        300,
        "both to reach register",
    )
    time.sleep(5)  # time enough to register and move the alias, were the lock ignored
    assert all(process.poll() is None for process in racing), "both wait for the lock"
    assert not client.search_model_versions("name = 'digits-classifier'"), "nobody registered while it was held"
    client.delete_registered_model(held)  # as a holder lets go
    for process in racing:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out[-2000:] + err[-2000:]

    registrations = {p: p.json("reports/registration.json") for p in (strong, weak)}
    versions = {str(v.version) for v in client.search_model_versions("name = 'digits-classifier'")}
    assert versions == {registrations[strong]["version"], registrations[weak]["version"]} and len(versions) == 2
    champion = client.get_model_version_by_alias("digits-classifier", "champion")
    assert str(champion.version) == registrations[strong]["version"]
    # serialised: whichever decided second compared itself with the champion the first had just set
    first, second = sorted(registrations.values(), key=lambda r: r["champion_version_before"] is not None)
    assert first["champion_version_before"] is None and first["promoted"] is True
    assert second["champion_version_before"] == first["version"]
    assert [m.name for m in client.search_registered_models()] == ["digits-classifier"], "no lock left behind"


def test_a_failing_backend_gives_one_line_then_register_resumes(shared_server, postgres, tmp_path):
    """PostgreSQL goes away: the server answers 5xx; register gives up after its retries with one line,
    and once the database is back `dvc repro` runs register alone (resuming a run: tests/test_mlflow_server.py)."""
    project = make_project(tmp_path / "project", params=QUICK_RETRIES)
    project.repro("evaluate")
    env = pipeline_env(project, shared_server)
    postgres.stop()
    try:
        failed = subprocess.run(["dvc", "repro"], cwd=project.root, env=env, capture_output=True, text=True)
    finally:
        postgres.start()
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and re.match(
        rf"error: MLflow tracking server {shared_server.url} is failing "
        r"\(gave up after 2 retries: too many 5\d\d error responses\)",
        errors[0],
    ), failed.stderr
    assert "Traceback" not in failed.stderr and (project.root / "outputs/model.pt").exists()

    rerun = subprocess.run(["dvc", "repro"], cwd=project.root, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert re.findall(r"Running stage '([^']+)'", rerun.stdout) == ["register"]
    registration = project.json("reports/registration.json")
    client = client_for(shared_server)
    run = client.get_run(run_id_of(client, registration))
    assert run.info.status == "FINISHED" and run.data.tags["registered_version"] == registration["version"]
