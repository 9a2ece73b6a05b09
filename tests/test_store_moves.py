"""The embedded MLflow store moves with the workspace: copy a project (cp -a), delete the original, and
predict and register work in the copy and write only inside it. Readers never create or write a store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import Project, make_project, register_again


def files_under(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def predict(cwd: Path, env: dict, out: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "components.predict",
            "--model",
            "models:/digits-classifier@champion",
            "--input",
            str(data),
            "--output",
            str(out),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_a_copied_workspace_with_its_original_deleted_predicts_and_registers_inside_itself(tmp_path):
    original = make_project(
        tmp_path / "original", per_class=20, params={"train": {"epochs": 2}, "register": {"min_macro_f1": 0.0}}
    )
    # the embedded default store, as `make run` uses it: no MLFLOW_TRACKING_URI
    env = {key: value for key, value in original.env.items() if key != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(tmp_path / "copy")
    original.env = env
    original.repro()
    assert original.json("reports/registration.json")["promoted"] is True
    shutil.copytree(original.root, tmp_path / "copy", symlinks=True)
    shutil.rmtree(original.root)
    copy = Project(tmp_path / "copy")
    copy.env = env

    # predict from a sub-folder of the copy: the project's store, not one in the working directory
    artifacts_before = files_under(copy.root / "mlflow" / "artifacts")
    result = predict(copy.root / "data", env, tmp_path / "predictions.csv", copy.root / "data" / "digits")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 10 * 20
    assert files_under(copy.root / "mlflow" / "artifacts") == artifacts_before, "a reader writes nothing there"
    assert not (copy.root / "data" / "mlflow").exists()
    import sqlite3

    from components.tracking import ARTIFACT_COLUMNS

    with sqlite3.connect(copy.root / "mlflow" / "mlflow.db") as db:
        recorded = [
            value
            for table, column in ARTIFACT_COLUMNS
            for (value,) in db.execute(f"SELECT {column} FROM {table}")
            if value
        ]
    assert recorded and not [value for value in recorded if str(original.root) in value], recorded
    assert any(value.endswith(f"{copy.root}/mlruns/0") for value in recorded), "MLflow's Default experiment moved too"

    # register a new version: it re-scores the champion from the copy's files and writes beside them
    result = register_again(copy, "reports/again.json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    again = copy.json("reports/again.json")
    assert again["champion_version_before"] == "1" and again["champion_macro_f1"] is not None, again
    assert not original.root.exists(), "nothing is written into the old place"
    new_files = set(files_under(copy.root / "mlflow" / "artifacts")) - set(artifacts_before)
    assert any(name.endswith("model.pt") for name in new_files), "the new model's files are in the copy's store"

    # a deleted database beside existing models: a new store, and one line saying the history starts over
    (copy.root / "mlflow" / "mlflow.db").unlink()
    result = register_again(copy, "reports/fresh.json", copies=9, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "champion history starts over" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING ") and "mlflow.db" in warnings[0]
    assert copy.json("reports/fresh.json")["version"] == "1"


def test_predict_outside_a_project_creates_no_store_and_says_where_it_looked(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "images").mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    result = predict(elsewhere, env, elsewhere / "out.csv", elsewhere / "images")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: no MLflow store at {elsewhere / 'mlflow' / 'mlflow.db'}")
    assert "MLFLOW_TRACKING_URI" in lines[0]
    assert not (elsewhere / "mlflow").exists(), "a reader never creates a store"
