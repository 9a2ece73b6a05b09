"""Fixtures: a real DVC project in a temp dir with a small real image folder and its own MLflow store."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Small enough for CI on 2 cores, big enough for a model well above the 0.9 promotion threshold.
SMALL_PARAMS = {
    "augment": {"copies": 1},
    "train": {"epochs": 8, "patience": 3, "width": 16},
    "register": {"bootstrap_resamples": 200},
}


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = deep_update(dict(base.get(key, {})), value) if isinstance(value, dict) else value
    return base


class Project:
    """A DVC project laid out like a clone of this repo, driven through the real `dvc` CLI."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def repro(self, *args: str) -> list[str]:
        """Run `dvc repro`; return the names of the stages that really ran."""
        result = self.run("dvc", "repro", *args)
        return re.findall(r"Running stage '([^']+)'", result.stdout)

    def set_params(self, changes: dict) -> None:
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(deep_update(yaml.safe_load(path.read_text()), changes), sort_keys=False))

    def json(self, relative: str):
        import json

        return json.loads((self.root / relative).read_text())


def make_project(root: Path, per_class: int = 60, params: dict | None = None) -> Project:
    from components.sample_data import export_digits

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "mlflow").mkdir()
    (root / "models").mkdir()  # a dependency of normalise and train (checkpoints for train.pretrained)
    shutil.copy(REPO / "models" / "README.md", root / "models")
    project = Project(root)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    project.set_params(deep_update(yaml.safe_load(yaml.safe_dump(SMALL_PARAMS)), params or {}))
    export_digits(root / "data" / "digits", limit_per_class=per_class)
    project.run("dvc", "init", "--no-scm", "-q")
    project.run("dvc", "config", "core.analytics", "false")
    project.run("dvc", "add", "-q", "data")
    return project


PENGUINS = "data/penguins/penguins.csv"


def make_penguins_project(root: Path) -> Project:
    """The shipped table example: examples/penguins/params.yaml over a project holding the raw penguins CSV."""
    from components.sample_data import export_penguins

    project = make_project(root, per_class=3)
    shutil.rmtree(root / "data" / "digits")
    export_penguins(root / PENGUINS)
    shutil.copy(REPO / "examples" / "penguins" / "params.yaml", root / "params.yaml")
    project.run("dvc", "add", "-q", "data")
    return project


@pytest.fixture
def project(tmp_path) -> Project:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Project:
    """One full `dvc repro`, shared by the read-only checks of a test module."""
    project = make_project(tmp_path_factory.mktemp("trained") / "project")
    project.first_run_stages = project.repro()
    return project


def clean_cli(capsys, params: dict, out: Path, report: Path) -> tuple[int, list[str]]:
    """The clean stage's CLI, in this process, on a params file made from `params` beside `out`.
    Returns its exit code and its stderr lines (INFO logging left out); a failure must be one line."""
    from components import clean
    from components.errors import run_cli

    params_file = out.parent / "params.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(params))
    code = 0
    try:
        run_cli(clean.main, ["--params", str(params_file), "--out", str(out), "--report", str(report)])
    except SystemExit as exit_info:
        code = exit_info.code
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
    if code:
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        assert not report.exists(), "a failed stage leaves no report"
    return code, lines


def run_id_of(client, registration: dict) -> str:
    """The MLflow run behind reports/registration.json (which holds no run id: it is the same bytes on every run)."""
    return client.get_model_version(registration["model_name"], registration["version"]).run_id


def register_again(project: Project, out: str, copies: int = 7, env: dict | None = None) -> subprocess.CompletedProcess:
    """register's own command (from dvc.yaml) on the project's outputs, with params that differ only in what
    the model is keyed by (augment.copies), so it registers a new version and re-scores the champion."""
    import shlex

    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["augment"]["copies"] = params["augment"]["copies"] + copies
    (project.root / "params-again.yaml").write_text(yaml.safe_dump(params))
    cmd = yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"]["register"]["cmd"]
    args = shlex.split(cmd.replace("reports/registration.json", out))[1:] + ["--params", "params-again.yaml"]
    return subprocess.run(
        [sys.executable, *args], cwd=project.root, env=env or project.env, capture_output=True, text=True
    )


@pytest.fixture(autouse=True)
def mlflow_uris_restored():
    """A test that points MLflow at its own store in this process (tracking.configure sets the tracking and
    registry URIs globally, and MLflow exports them to the environment for child processes) must not leave
    later tests reading that store."""
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved = registry._registry_uri, tracking._tracking_uri
    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    registry._registry_uri, tracking._tracking_uri = saved
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
