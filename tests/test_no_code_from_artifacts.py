"""No code runs from an artifact: crafted pickles (each writes a marker file when unpickled) put where the
project reads weights and preprocessing - its own outputs, and a registered model moved to @champion -
are refused with one line, and the marker never appears."""

from __future__ import annotations

import json
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import Project, make_penguins_project, make_project, register_again


class RunsCode:
    """Unpickling this runs `code` (exec): what a crafted pickle, joblib or cloudpickle file can do."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def crafted(path: Path, marker: Path) -> Path:
    """A pickle at `path` that creates `marker` when loaded (joblib.load and torch.load without
    weights_only would both run it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(RunsCode(f"open({str(marker)!r}, 'w').write('code ran')")))
    return path


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(("INFO ", "WARNING "))]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Project:
    project = make_penguins_project(tmp_path_factory.mktemp("penguins") / "project")
    project.repro()
    return project


def test_crafted_preprocessing_and_weights_in_the_outputs_are_refused(penguins, tmp_path):
    marker = tmp_path / "marker"
    work = tmp_path / "outputs"
    shutil.copytree(penguins.root / "outputs", work)
    (work / "preprocess" / "transformer.skops").unlink()
    crafted(work / "preprocess" / "transformer.skops", marker)  # a pickle under the expected name
    crafted(work / "preprocess" / "transformer.joblib", marker)  # and the name older versions loaded
    augment = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.augment",
            "--params",
            "params.yaml",
            "--split",
            str(work / "split"),
            "--preprocess",
            str(work / "preprocess"),
            "--out",
            str(tmp_path / "augmented.npz"),
        ],
        cwd=penguins.root,
        env=penguins.env,
        capture_output=True,
        text=True,
    )
    assert "transformer.skops: not a readable skops file" in one_line_failure(augment)

    crafted(work / "model.pt", marker)
    evaluate_cmd = yaml.safe_load((penguins.root / "dvc.yaml").read_text())["stages"]["evaluate"]["cmd"]
    args = shlex.split(
        evaluate_cmd.replace("outputs/model.pt", str(work / "model.pt")).replace("reports/", f"{tmp_path}/reports/")
    )[1:]
    evaluate = subprocess.run(
        [sys.executable, *args], cwd=penguins.root, env=penguins.env, capture_output=True, text=True
    )
    assert "not a saved model of plain weights" in one_line_failure(evaluate)
    assert not marker.exists(), "no code from an artifact ran"


def test_a_skops_file_with_a_type_outside_the_allow_list_is_refused(penguins, tmp_path):
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from components.errors import UserError
    from components.normalise import load_preprocess

    folder = tmp_path / "preprocess"
    shutil.copytree(penguins.root / "outputs" / "preprocess", folder)
    skops.io.dump(FunctionTransformer(os.system), folder / "transformer.skops")
    with pytest.raises(UserError, match="holds types outside the allow-list"):
        load_preprocess(folder)


def test_the_table_preprocessing_is_saved_as_data(penguins):
    from components.normalise import load_preprocess

    folder = penguins.root / "outputs" / "preprocess"
    assert sorted(p.name for p in folder.iterdir()) == ["columns.json", "meta.json", "schema.yaml", "transformer.skops"]
    meta, preprocessor = load_preprocess(folder)
    assert meta["kind"] == "tabular" and "categorical__island_Biscoe" in preprocessor.feature_names()


def test_the_table_preprocessing_is_the_same_bytes_when_fitted_again(penguins, tmp_path):
    """skops numbers objects by memory address and dates its zip entries: both are normalised away, so a
    fit in another process gives the same transformer.skops, and DVC sees the same output."""
    again = tmp_path / "preprocess"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "components.normalise",
            "--clean",
            "outputs/clean",
            "--out",
            str(tmp_path / "split"),
            "--preprocess",
            str(again),
            "--report",
            str(tmp_path / "split.json"),
        ],
        cwd=penguins.root,
        check=True,
        capture_output=True,
    )
    first = (penguins.root / "outputs" / "preprocess" / "transformer.skops").read_bytes()
    assert (again / "transformer.skops").read_bytes() == first
    # Entries numbered in order of appearance and stored in the order of those numbers, never of addresses
    import zipfile

    names = zipfile.ZipFile(again / "transformer.skops").namelist()
    arrays = names[:-1]
    assert names[-1] == "schema.json" and arrays == sorted(arrays), names
    assert {int(n.removesuffix(".npy")) for n in arrays} <= set(range(1, 1000)), names


def crafted_model_version(project: Project, marker: Path, weights: Path, preprocess: Path) -> str:
    """Register a model whose pyfunc (a cloudpickled python_model) and given files are what an attacker with
    write access to the registry would put there; move @champion to it. Returns its version."""
    from mlflow.pyfunc import PythonModel

    class Crafted(PythonModel):
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('code ran')",)

        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(project.env["MLFLOW_TRACKING_URI"])
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Crafted(),
            registered_model_name="digits-classifier",
            artifacts={"model": str(weights), "preprocess": str(preprocess)},
            pip_requirements=["mlflow"],
        )  # inferring them would load (run) it
    assert not marker.exists(), "logging it ran nothing"
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias("digits-classifier", "champion", version)
    return version


@pytest.mark.parametrize("attack", ["pickled weights", "pickled preprocessing"])
def test_a_crafted_champion_runs_no_code_in_predict_or_register(tmp_path, attack):
    project = make_project(
        tmp_path / "project", per_class=20, params={"train": {"epochs": 2}, "register": {"min_macro_f1": 0.0}}
    )
    project.repro()
    marker = tmp_path / "marker"
    weights, preprocess = project.root / "outputs" / "model.pt", tmp_path / "preprocess"
    shutil.copytree(project.root / "outputs" / "preprocess", preprocess)
    if attack == "pickled weights":
        weights = crafted(tmp_path / "weights" / "model.pt", marker)
    else:  # a table model's preprocessing, in the old pickled form and as a pickle named .skops
        meta = json.loads((preprocess / "meta.json").read_text()) | {"kind": "tabular"}
        (preprocess / "meta.json").write_text(json.dumps(meta))
        (preprocess / "columns.json").write_text(
            '{"numeric": [], "categorical": [], "scaling": "standard", "clip_factor": null}'
        )
        crafted(preprocess / "transformer.skops", marker)
        crafted(preprocess / "transformer.joblib", marker)
    version = crafted_model_version(project, marker, weights, preprocess)

    predict = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.predict",
            "--model",
            "models:/digits-classifier@champion",
            "--input",
            "data/digits",
            "--output",
            str(tmp_path / "predictions.csv"),
        ],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
    )
    line = one_line_failure(predict)
    assert line.startswith("error: models:/digits-classifier@champion: ")
    assert ("not a saved model of plain weights" if attack == "pickled weights" else "transformer.skops") in line

    register = register_again(project, "reports/again.json")
    assert register.returncode == 0, register.stderr[-3000:]
    again = project.json("reports/again.json")
    assert again["champion_version_before"] == version and again["promoted"] is False
    assert "the champion cannot score this test split" in again["reason"]
    assert not marker.exists(), "no code from the registered model ran"

    # The attack is real: MLflow's own loader unpickles the python_model and runs the code.
    load = "import mlflow; mlflow.pyfunc.load_model('models:/digits-classifier@champion')"
    subprocess.run([sys.executable, "-c", load], cwd=project.root, env=project.env, capture_output=True)
    assert marker.exists()


def test_a_crafted_training_checkpoint_is_ignored_not_run(tmp_path):
    import torch

    from components.train import resume_from

    marker = tmp_path / "marker"
    checkpoint = crafted(tmp_path / "checkpoints" / "epoch.pt", marker)
    net = torch.nn.Linear(2, 2)
    assert resume_from(checkpoint, net, torch.optim.Adam(net.parameters()), torch.Generator()) is None
    assert not marker.exists() and not checkpoint.exists(), "refused, and removed so that no retry reads it"
