"""The hyperparameter search (pipelines/tune.py) on the penguins table, prepared once by `dvc repro augment`:
real Optuna studies in sqlite beside a real MLflow sqlite store, real training (4 epochs of a tiny MLP)."""

import shutil
import subprocess
import sys

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from components.params import load_params
from conftest import REPO, Project, make_penguins_project

# A space where (batch_size 30, micro_batch_size 8 or 16) is refused by the schema when the trial starts (a
# failed trial), and lr spans three decades (the slow ones fall below the median and are pruned).
TUNE = {
    "space": {
        "train.lr": {"loguniform": [0.00001, 0.05]},
        "train.batch_size": {"choice": [16, 30]},
        "train.micro_batch_size": {"choice": [8, 16]},
        "train.hidden": {"choice": [[8], [16, 16]]},
    },
    "n_trials": 5,
    "seed": 43,  # trials 0-2 (random, as TPE starts): a refused batch size, lr 0.009, lr 2e-5 (pruned)
    "pruning_startup_trials": 1,
    "pruning_warmup_epochs": 1,
}


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Project:
    project = make_penguins_project(tmp_path_factory.mktemp("tune") / "project")
    project.set_params({"train": {"epochs": 4, "patience": 4}, "tune": TUNE})
    project.repro("augment")
    shutil.copytree(REPO / "pipelines", project.root / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    return project


def tune(project: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return project.run(sys.executable, "-m", "pipelines.tune", *args, check=check)


def study(project: Project) -> optuna.Study:
    best = yaml.safe_load((project.root / "reports/tune/best.yaml").read_text())
    return optuna.load_study(study_name=best["study"], storage=best["storage"])


@pytest.fixture(scope="module")
def searched(penguins) -> Project:
    tune(penguins)
    return penguins


def test_a_search_records_every_trial_as_a_child_run_failed_and_pruned_ones_too(searched):
    trials = study(searched).get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 5
    assert TrialState.FAIL in states and TrialState.PRUNED in states and TrialState.COMPLETE in states
    best = yaml.safe_load((searched.root / "reports/tune/best.yaml").read_text())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert best["value"] == max(t.value for t in complete)
    assert set(best["params"]) == set(TUNE["space"])
    assert best["trials"]["complete"] == len(complete)

    client = MlflowClient(searched.env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(study(searched).user_attrs["mlflow_parent_run"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_macro_f1"] == best["value"]
    assert "trials.png" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=100
    )
    by_trial = {int(run.data.tags["optuna_trial"]): run for run in children}
    assert sorted(by_trial) == [t.number for t in trials]
    for trial in trials:
        run = by_trial[trial.number]
        expected = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
        assert run.data.tags["trial_state"] == expected[trial.state]
        curve = client.get_metric_history(run.info.run_id, "val_macro_f1")
        if trial.state == TrialState.FAIL:
            assert "micro_batch_size" in run.data.tags["error"] and run.info.status == "FAILED"
            assert trial.params["train.batch_size"] == 30
        else:  # the per-epoch curve: all 4 epochs, or the epochs before pruning
            assert [m.step for m in curve] == sorted(trial.intermediate_values)
            assert len(curve) == 4 if trial.state == TrialState.COMPLETE else len(curve) < 4
            assert run.data.params["train.lr"] == str(trial.params["train.lr"])


def test_an_interrupted_search_resumes_without_repeating_trials(searched):
    from pipelines.tune import sampler, suggest

    before = study(searched)
    # What a killed worker leaves: a trial asked for (its values drawn) and never told.
    left = optuna.load_study(
        study_name=before.study_name,
        storage=before._storage,
        sampler=sampler(load_params(searched.root / "params.yaml").tune, 7),
    )
    killed = left.ask()
    suggest(killed, load_params(searched.root / "params.yaml").tune)
    searched.set_params({"tune": {"n_trials": 7, "parallelism": 2}})

    tune(searched)
    trials = study(searched).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    old = {t.number: t for t in before.get_trials()}
    assert all(trials[n].params == t.params and trials[n].state == t.state for n, t in old.items()), "kept as they were"
    interrupted = trials[killed.number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True
    finished = [t for t in trials if t.state != TrialState.RUNNING and not t.user_attrs.get("interrupted")]
    assert len(finished) == 7, "n_trials counts finished trials, the interrupted one not among them"
    retried = [t for t in trials[killed.number + 1 :] if t.params == interrupted.params]
    assert len(retried) == 1, "the interrupted trial's values ran again, once"
    assert study(searched).user_attrs["mlflow_parent_run"] == before.user_attrs["mlflow_parent_run"]


def test_apply_writes_the_best_values_into_params_yaml_keeping_its_comments(searched):
    before = (searched.root / "params.yaml").read_text()
    result = tune(searched, "--apply")
    best = yaml.safe_load((searched.root / "reports/tune/best.yaml").read_text())["params"]
    params = load_params(searched.root / "params.yaml")
    assert params.train.lr == best["train.lr"] and list(params.train.hidden) == best["train.hidden"]
    assert params.train.batch_size == best["train.batch_size"]
    assert "now run `dvc repro`" in result.stdout
    after = (searched.root / "params.yaml").read_text()
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert all(line.split(":")[0].strip() in ("lr", "hidden", "batch_size", "micro_batch_size") for line in changed)


def test_apply_refuses_the_best_values_of_another_study(searched, tmp_path):
    """best.yaml is the search of the project's params.yaml; params whose train.epochs differ make other trials."""
    other = yaml.safe_load((searched.root / "params.yaml").read_text())
    other["train"]["epochs"] = 9
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    result = tune(searched, "--apply", "--params", str(tmp_path / "other.yaml"), check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "reports/tune/best.yaml: found by study penguins-" in result.stderr
    assert f"run the search for it first: python -m pipelines.tune --params {tmp_path / 'other.yaml'}" in result.stderr
    assert yaml.safe_load((tmp_path / "other.yaml").read_text()) == other, "left as it was"


@pytest.mark.parametrize(
    ("key", "dimension", "message"),
    [
        ("train.lrr", {"uniform": [0.0, 0.1]}, "tune.space: train.lrr is not a params key (did you mean 'train.lr'?)"),
        ("augment.jitter", {"uniform": [0.0, 0.1]}, "tune.space: augment.jitter is read before train"),
        ("seed", {"int": [0, 5]}, "tune.space: seed is read before train"),
        ("train.epochs", {"uniform": [2, 6]}, "tune.space.train.epochs: uniform draws fractions such as 3.273"),
    ],
)
def test_a_bad_space_key_is_one_line_naming_it(tmp_path, key, dimension, message):
    params = yaml.safe_load((REPO / "examples/penguins/params.yaml").read_text())
    params["tune"]["space"] = {key: dimension}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.tune", "--params", str(tmp_path / "params.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_missing_splits_say_what_to_run(tmp_path):
    shutil.copy(REPO / "examples/penguins/params.yaml", tmp_path / "params.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.tune"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert result.returncode == 1
    assert "outputs/augmented/train.npz: not found; prepare the splits first with `dvc repro augment`" in result.stderr


def test_apply_keeps_the_shipped_params_yaml_layout_but_the_searched_values(tmp_path):
    from pipelines.tune import apply_best, study_name

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    values = {"train.lr": 0.0123, "train.width": 16, "train.hidden": [8, 8]}
    best = {"study": study_name(load_params(tmp_path / "params.yaml")), "params": values}
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(best))
    apply_best(tmp_path / "params.yaml", tmp_path / "best.yaml")
    before, after = (REPO / "params.yaml").read_text().splitlines(), (tmp_path / "params.yaml").read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert [new.split("#")[0].strip() for _, new in changed] == ["lr: 0.0123", "width: 16", "hidden: [8, 8]"]
    assert all(old.split(":")[0] == new.split(":")[0] for old, new in changed), "indentation and keys kept"
