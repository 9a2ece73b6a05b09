"""Same inputs, same bytes: `make run` in two fresh clones of this tree gives byte-identical outputs and a
clean `git status`; a params change and its undoing restore from DVC's run-cache and reuse the registered
version; `dvc exp run` names its MLflow run; `pipelines.reproduce` reruns a registered version; `make clean`
removes exactly what the pipeline generates. The clones share this test session's virtual environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

VENV = Path(os.path.abspath(sys.executable)).parent.parent
MODEL = "digits-classifier"


def fresh_clone(dest: Path) -> Path:
    """This working tree as a new user's clone gets it: every file git tracks or would track, committed."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "clone"],
    ):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


def env() -> dict:
    """The clone's own MLflow store (its default), the shared venv first on PATH as `make` puts it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_"))}
    return clean | {"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def make_run(clone: Path) -> subprocess.CompletedProcess:
    # -o: the venv is installed already; never reinstall it from the clone (its pyproject.toml is newer)
    return sh(clone, "make", "run", f"VENV={VENV}", "-o", f"{VENV}/.installed", "-o", f"{VENV}/.installed-dev")


def git_status(clone: Path) -> str:
    return sh(clone, "git", "status", "--porcelain").stdout


def tracked_outputs(clone: Path) -> dict[str, bytes]:
    """Every file an output in dvc.lock names (folders walked), with its bytes."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    files = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = clone / out["path"]
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    files[str(file.relative_to(clone))] = file.read_bytes()
    return files


def mlflow_client(clone: Path):
    import mlflow

    uri = f"sqlite:///{clone / 'mlflow' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> tuple[Path, Path]:
    """Two fresh clones, each after one `make run` from nothing."""
    first, second = (fresh_clone(tmp_path_factory.mktemp(name) / "repo") for name in ("first", "second"))
    for clone in (first, second):
        make_run(clone)
    return first, second


@pytest.mark.slow
def test_two_fresh_clones_give_the_same_bytes_and_a_clean_git_status(clones):
    first, second = clones
    assert git_status(first) == git_status(second) == "", "make run changed nothing git tracks"
    outputs = [tracked_outputs(clone) for clone in clones]
    assert {
        "outputs/model.pt",
        "outputs/train_info.json",
        "reports/metrics.json",
        "reports/registration.json",
        "reports/plots/training.csv",
        "outputs/augmented/train.npz",
    } <= set(outputs[0])
    assert sorted(outputs[0]) == sorted(outputs[1])
    assert [name for name in outputs[0] if outputs[0][name] != outputs[1][name]] == []
    # the lineage of the run is true: committed sources, though DVC rewrote its own files before register
    client = mlflow_client(first)
    version = client.get_model_version(MODEL, "1")
    run = client.get_run(version.run_id)
    head = sh(first, "git", "rev-parse", "HEAD").stdout.strip()
    assert (run.data.tags["git_commit"], run.data.tags["git_dirty"]) == (head, "false")
    assert run.info.run_name == f"{head[:7]}-{run.data.tags['params_hash'][:8]}"


@pytest.mark.slow
def test_params_away_and_back_restore_from_the_run_cache_and_reuse_the_version(clones):
    first, _ = clones
    registration = (first / "reports/registration.json").read_bytes()
    head = sh(first, "git", "rev-parse", "HEAD").stdout.strip()
    # away, as a DVC experiment: a new model, a new version, an MLflow run named after the experiment
    sh(first, "dvc", "exp", "run", "--name", "lr-exp", "--set-param", "train.lr=0.002")
    client = mlflow_client(first)
    exp_version = client.get_model_version(MODEL, "2")
    run = client.get_run(exp_version.run_id)
    assert run.info.run_name == "lr-exp"
    assert (run.data.tags["dvc_exp_name"], run.data.tags["dvc_exp_baseline_rev"]) == ("lr-exp", head)
    assert run.data.tags["git_dirty"] == "true", "params.yaml differs from the commit"
    table = sh(first, "make", "experiments", f"VENV={VENV}", "-o", f"{VENV}/.installed").stdout
    header = next(line for line in table.splitlines() if "Experiment" in line)
    assert "lr-exp" in table and "train.lr" in header and "macro_f1" in header
    assert "components/" not in header and "seed" not in header, "only what differs, no dependency hashes"
    # and back: train and evaluate come from the run-cache, register finds the version it made before
    sh(first, "git", "checkout", "params.yaml")
    result = sh(first, "dvc", "repro")
    assert re.findall(r"Running stage '([^']+)'", result.stdout) == ["register"]
    assert "Stage 'train' is cached - skipping run" in result.stdout
    assert "version 1 is this very model" in result.stderr
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")) == [1, 2]
    assert (first / "reports/registration.json").read_bytes() == registration
    assert git_status(first) == ""


@pytest.mark.slow
def test_reproduce_reruns_a_registered_version_from_its_commit(clones):
    first, _ = clones
    result = sh(first, "python", "-m", "pipelines.reproduce", f"models:/{MODEL}/1")
    assert f"models:/{MODEL}/1: reproduced: same weights hash and test metrics" in result.stdout
    assert sh(first, "git", "worktree", "list").stdout.count("\n") == 1, "the temporary worktree is removed"
    assert git_status(first) == ""
    # a version whose record does not match what its commit gives is reported, difference by difference
    from pipelines.reproduce import compare

    record = {"tags": {"weights_hash": "0" * 64}, "metrics": {"macro_f1": 0.5, "n_test": 360.0}}
    differences = compare(record, first, tolerance=1e-9)
    assert differences[0].startswith("weights_hash: registered 0000000000000000..., rerun ")
    assert differences[1].startswith("test_macro_f1: registered 0.500000, rerun 0.9")
    assert len(differences) == 2, "n_test matches"
    bad = sh(first, "python", "-m", "pipelines.reproduce", "digits-classifier/1", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: 'digits-classifier/1': write models:/NAME@ALIAS"
    )
    elsewhere = sh(first / "components", "python", "-m", "pipelines.reproduce", f"models:/{MODEL}/1", check=False)
    assert (
        elsewhere.returncode == 1
        and "no dvc.yaml here; run python -m pipelines.reproduce from the project root"
        in elsewhere.stderr.strip().splitlines()[-1]
    )
    assert not (first / "components" / "mlflow").exists(), "no stray MLflow store"


@pytest.mark.slow
def test_make_clean_removes_what_the_pipeline_made_and_nothing_git_tracks(clones):
    _, second = clones
    sh(second, "dvc", "plots", "show")
    assert (second / "build/dvc_plots/index.html").exists() and not (second / "dvc_plots").exists()
    assert git_status(second) == ""
    sh(second, "make", "clean")
    assert sh(second, "git", "ls-files", "--deleted").stdout == ""
    assert git_status(second) == ""
    assert not (second / "build").exists() and not (second / "reports/predictions.csv").exists()
    assert not (second / "reports/registration.json").exists()
    assert sorted(p.name for p in (second / "outputs").rglob("*") if p.is_file()) == [".gitignore", ".gitignore"]
    assert (second / "mlflow/mlflow.db").exists(), "the registry is not an output: `make clean-mlflow` removes it"
    # what DVC cached comes back without training; register runs (its receipt was removed) and finds its version
    result = make_run(second)
    assert re.findall(r"Running stage '([^']+)'", result.stdout) == ["register"]
    assert "version 1 is this very model" in result.stderr
    assert (second / "outputs/model.pt").exists() and git_status(second) == ""
    # an emptied store takes its receipt with it, so the model is registered into the new store
    sh(second, "make", "clean-mlflow")
    assert not (second / "mlflow/mlflow.db").exists() and not (second / "reports/registration.json").exists()
    result = make_run(second)
    assert re.findall(r"Running stage '([^']+)'", result.stdout) == ["register"]
    assert [int(v.version) for v in mlflow_client(second).search_model_versions(f"name='{MODEL}'")] == [1]
    assert git_status(second) == ""


def test_git_dirty_means_a_change_by_the_user_not_by_dvc(tmp_path, monkeypatch):
    from components.tracking import git_commit

    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "evaluate": {
                        "cmd": "true",
                        "outs": ["reports/predictions.csv"],
                        "metrics": [{"reports/metrics.json": {"cache": False}}],
                        "plots": [{"reports/plots/per_class.json": {"cache": False}}],
                    }
                }
            }
        )
    )
    for name in ("params.yaml", "dvc.lock", "reports/metrics.json", "reports/plots/per_class.json", "src.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "c"],
    ):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    assert git_commit()[1] is False
    for name in ("dvc.lock", "reports/metrics.json", "reports/plots/per_class.json"):
        (tmp_path / name).write_text("rewritten by dvc repro\n")
    (tmp_path / "reports/predictions.csv").write_text("an untracked output\n")
    assert git_commit()[1] is False, "DVC's own files are not the user's changes"
    (tmp_path / "params.yaml").write_text("b\n")
    assert git_commit()[1] is True
    subprocess.run(["git", "checkout", "params.yaml"], cwd=tmp_path, check=True)
    (tmp_path / "new_module.py").write_text("x = 1\n")
    assert git_commit()[1] is True, "a new source file git would track"
