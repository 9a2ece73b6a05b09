"""MLflow as people use it, all real: `dvc repro` logging to a real `mlflow server`, its UI in headless Chromium,
and a registry that survives faults (a server stopped mid-registration, a killed registration)."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml
from PIL import Image

from conftest import make_project, run_id_of
from servers import QUICK_RETRIES, MlflowServer, ci_or_skip, create_store, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# Headless flags that keep Chromium off the (closed) network: no background or component-update traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sqlite_server(root: Path, port: int | None = None) -> MlflowServer:
    """A tracking server on a sqlite store in `root`, serving artifacts from `root/server-artifacts`."""
    db = root / "server.db"
    if not db.exists():
        create_store(f"sqlite:///{db}")
    return MlflowServer(
        [
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(root / "server-artifacts"),
            "--workers",
            "1",
        ],
        root / "server.log",
        port=port,
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )


def runs_of(client: mlflow.MlflowClient, experiment: str = "digits") -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real pipeline on the small config, logging to a real tracking server."""
    root = tmp_path_factory.mktemp("served")
    project = make_project(root / "project")
    server = sqlite_server(root).start()
    try:
        project.env["MLFLOW_TRACKING_URI"] = server.url
        project.repro()
        yield project, server
    finally:
        server.stop()


def test_the_mlflow_ui_shows_the_run_its_pictures_and_the_champion(served, tmp_path):
    """What a person sees: the experiment, the run with its macro-F1, the confusion matrix among the
    artifacts, and the model with @champion. Screenshots go to this test's temp dir."""
    if not CHROMIUM.exists():
        ci_or_skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    project, server = served
    registration = project.json("reports/registration.json")
    macro_f1 = project.json("reports/metrics.json")["macro_f1"]
    client = mlflow.MlflowClient(server.url)
    run = client.get_run(run_id_of(client, registration))
    picture = Image.open(project.root / "reports/plots/confusion_matrix.png").size

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)

        page.goto(f"{server.url}/#/experiments")
        page.get_by_text("Model training", exact=True).click()  # the UI opens on GenAI views
        page.get_by_role("link", name="digits", exact=True).click()
        run_link = page.get_by_role("link", name=run.info.run_name, exact=True)
        expect(run_link).to_be_visible()
        page.screenshot(path=tmp_path / "1-experiment-runs.png")

        run_link.click()
        expect(page.get_by_text("test_macro_f1", exact=True)).to_be_visible()
        # the metrics table shows the value metrics.json holds, at full precision
        assert re.search(rf"test_macro_f1\s+{re.escape(repr(macro_f1))}", page.inner_text("body"))
        page.screenshot(path=tmp_path / "2-run-overview.png", full_page=True)

        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("plots", exact=True).click()
        page.get_by_text("confusion_matrix.png", exact=True).click()
        shown = page.locator("img[src^='blob:']").first
        expect(shown).to_be_visible()
        # the browser decoded the PNG that evaluate drew: same pixel size as the file on disk
        assert tuple(shown.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == picture
        page.screenshot(path=tmp_path / "3-run-confusion-matrix.png")

        page.goto(f"{server.url}/#/models")
        row = page.get_by_role("row").filter(has_text="digits-classifier")
        expect(row).to_be_visible()
        notice = page.get_by_role("dialog")  # "new Model Registry UI" pops up once
        if notice.is_visible():
            notice.get_by_role("button", name="Try it now").click()
            expect(notice).to_be_hidden()
            expect(page.locator("[class*='modal-mask']")).to_be_hidden()  # its grey overlay fades out last
        expect(row).to_contain_text(re.compile(r"champion\s*:\s*Version 1"))
        page.screenshot(path=tmp_path / "4-models.png")

        page.get_by_role("link", name="digits-classifier", exact=True).click()
        page.get_by_role("link", name="Version 1", exact=True).first.click()
        # the version links back to the run that produced it
        expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible()
        page.screenshot(path=tmp_path / "5-model-version.png")
        browser.close()

    for name in ("1-experiment-runs", "2-run-overview", "3-run-confusion-matrix", "4-models", "5-model-version"):
        assert Image.open(tmp_path / f"{name}.png").size[0] >= 1400, name


def test_a_server_stopped_mid_registration_costs_no_training(tmp_path):
    """The server dies while register is logging: one line naming it, model and metrics stay on disk,
    and once it is back `dvc repro` runs register alone, finishing the same MLflow run."""
    project = make_project(tmp_path / "project", params=QUICK_RETRIES)
    server = sqlite_server(tmp_path).start()
    try:
        project.env["MLFLOW_TRACKING_URI"] = server.url
        client = mlflow.MlflowClient(server.url)
        repro = subprocess.Popen(
            ["dvc", "repro"],
            cwd=project.root,
            env=project.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started = wait_for(lambda: runs_of(client), timeout=600, what="register to create the run")
    finally:
        server.stop()  # mid-registration
    out, err = repro.communicate(timeout=300)

    assert repro.returncode != 0, out
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert errors == [errors[0]] and errors[0].startswith(
        f"error: MLflow tracking server {server.url} is not reachable (gave up after 2 retries"
    ), err
    assert "rerun `dvc repro` (only register runs)" in errors[0] and "Traceback" not in err
    model = (project.root / "outputs/model.pt").read_bytes()
    assert (project.root / "reports/metrics.json").exists()
    assert not (project.root / "reports/registration.json").exists()

    restarted = sqlite_server(tmp_path, port=server.port).start()  # same store, same address
    try:
        assert project.repro() == ["register"], "no retraining"
        registration = project.json("reports/registration.json")
        runs, registered_run = runs_of(client), run_id_of(client, registration)
    finally:
        restarted.stop()
    assert (project.root / "outputs/model.pt").read_bytes() == model
    assert registration["version"] == "1" and registration["promoted"] is True
    assert [r.info.run_id for r in runs] == [started[0].info.run_id] == [registered_run], (
        "the interrupted run is finished, not duplicated"
    )
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["test_macro_f1"] == pytest.approx(project.json("reports/metrics.json")["macro_f1"])
    assert runs[0].data.tags["registered_version"] == "1"


def test_a_killed_registration_is_marked_failed_and_the_rerun_finishes_it(project):
    """SIGTERM (a pod deleted, a Ctrl-C) during register: the run says FAILED, not RUNNING."""
    project.repro("evaluate")
    command = shlex.split(yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"]["register"]["cmd"])
    register = subprocess.Popen(
        command, cwd=project.root, env=project.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    # once the run is open and logging (its params are in), not between creating and opening it
    started = wait_for(lambda: [r for r in runs_of(client) if r.data.params], timeout=120, what="register logging")
    register.send_signal(signal.SIGTERM)
    _, err = register.communicate(timeout=120)
    assert register.returncode == 130, err
    assert client.get_run(started[0].info.run_id).info.status == "FAILED"
    assert not (project.root / "reports/registration.json").exists()

    assert project.repro() == ["register"]
    registration = project.json("reports/registration.json")
    assert run_id_of(client, registration) == started[0].info.run_id and len(runs_of(client)) == 1
    assert client.get_run(started[0].info.run_id).info.status == "FINISHED"
    versions = client.search_model_versions("name = 'digits-classifier'")
    assert [str(v.version) for v in versions] == ["1"] and registration["promoted"] is True
    assert (
        len(client.get_metric_history(started[0].info.run_id, "train_loss"))
        == project.json("outputs/train_info.json")["epochs_run"]
    ), "a resumed run does not log its curves twice"
