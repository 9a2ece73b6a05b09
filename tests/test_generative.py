"""augment.generator cvae: the conditional VAE of the augment stage (components/generative.py), on real digit
images and the real penguins table, through the augment stage's own function and the real `dvc repro`."""

from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pytest
import torch
import yaml

from components import generative
from components.augment import augment_file
from components.errors import UserError
from components.io import load_arrays
from components.params import Augment, Cvae, validate_params
from conftest import make_penguins_project, make_project

SMALL = {"latent_size": 8, "width": 16, "epochs": 60, "min_steps": 800}


@pytest.fixture(scope="module")
def digits_split(tmp_path_factory):
    """normalise's outputs for 30 digit images per class, from a real `dvc repro normalise`."""
    project = make_project(tmp_path_factory.mktemp("digits") / "project", per_class=30)
    project.repro("normalise")
    return project.root / "outputs"


@pytest.fixture(scope="module")
def penguins_split(tmp_path_factory):
    project = make_penguins_project(tmp_path_factory.mktemp("penguins") / "project")
    project.repro("normalise")
    return project.root / "outputs"


def only_train(outputs, tmp_path):
    """A split folder holding train.npz alone: augment must not need (or read) val or test."""
    split = tmp_path / "split"
    split.mkdir()
    shutil.copy(outputs / "split" / "train.npz", split)
    return split


def cvae(**changes) -> Augment:
    return Augment(copies=0, generator="cvae", device="cpu", cvae=Cvae(**(SMALL | changes)))


@pytest.fixture(scope="module")
def generated(digits_split, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generated")
    cfg = cvae(per_class=7, on_gate_failure="use")
    report = augment_file(only_train(digits_split, tmp), digits_split / "preprocess", cfg, 0, tmp / "train.npz")
    return load_arrays(tmp / "train.npz"), report


def test_generated_examples_are_added_to_the_training_set_only_with_their_labels(digits_split, generated):
    train = load_arrays(digits_split / "split" / "train.npz")
    out, report = generated
    n, classes = len(train["y"]), len(train["classes"])
    assert out["x"].shape == (n + 7 * classes, *train["x"].shape[1:]) and out["x"].dtype == np.float32
    assert np.array_equal(out["x"][:n], train["x"]) and np.array_equal(out["y"][:n], train["y"])
    assert np.array_equal(out["origin"], np.r_[np.zeros(n), np.full(7 * classes, 2)])
    assert np.array_equal(out["y"][n:], np.repeat(np.arange(classes), 7))
    assert report["counts"] == {"train": n, "classical": 0, "generated": 7 * classes}
    assert all(row["generated"] == 7 for row in report["per_class"].values())
    # The labels are the classes the examples look like: nearest to their own class's mean real image.
    means = np.stack([train["x"][train["y"] == c].mean(0) for c in range(classes)])
    added = out["x"][n:]
    nearest = ((added[:, None] - means[None]) ** 2).reshape(len(added), classes, -1).sum(-1).argmin(1)
    assert (nearest == out["y"][n:]).mean() >= 0.8
    # Generated images are images the served model could be given: pixels of whole uint8 steps, scaled.
    assert np.isfinite(added).all()


def test_the_generator_is_fitted_on_the_train_split_alone_minus_the_held_back_slice(digits_split, generated):
    train = load_arrays(digits_split / "split" / "train.npz")
    _, report = generated
    fitted = report["cvae"]
    assert fitted["fit_examples"] + fitted["holdout_examples"] == len(train["y"])
    assert fitted["holdout_examples"] == sum(round(0.2 * n) for n in np.bincount(train["y"]))
    fit_rows, held_rows = generative.holdout_split(train["y"], 0.2, 0)
    assert not set(fit_rows) & set(held_rows) and len(fit_rows) == fitted["fit_examples"]


def test_the_same_seed_gives_the_same_examples_on_cpu(digits_split, tmp_path):
    split = only_train(digits_split, tmp_path)
    preprocess = digits_split / "preprocess"
    cfg = cvae(epochs=3, min_steps=0, per_class=4, on_gate_failure="use")
    first, again, other = (tmp_path / name for name in ("first.npz", "again.npz", "other.npz"))
    augment_file(split, preprocess, cfg, 5, first)
    augment_file(split, preprocess, cfg, 5, again)
    augment_file(split, preprocess, cfg.model_copy(update={"cvae": cfg.cvae.model_copy(update={"seed": 6})}), 5, other)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    assert not np.array_equal(load_arrays(first)["x"], load_arrays(other)["x"])


def test_the_quality_gate_rejects_an_untrained_generator(digits_split, tmp_path, caplog):
    split = only_train(digits_split, tmp_path)
    with caplog.at_level(logging.WARNING):
        report = augment_file(split, digits_split / "preprocess", cvae(epochs=0), 0, tmp_path / "train.npz")
    gate = report["cvae"]["gate"]
    assert not gate["passed"] and not report["cvae"]["used"]
    assert gate["recon_ratio"] > 1 and gate["mmd_ratio"] > 0.5  # worse than the class means; unlike its class
    assert report["counts"]["generated"] == 0 and 2 not in load_arrays(tmp_path / "train.npz")["origin"]
    assert "quality gate failed: reconstruction error ratio" in caplog.text and "using no generated" in caplog.text
    with pytest.raises(UserError, match="augment.cvae quality gate: reconstruction error ratio"):
        augment_file(split, digits_split / "preprocess", cvae(epochs=0, on_gate_failure="fail"), 0, tmp_path / "f.npz")


def test_a_trained_generator_passes_the_gate(generated):
    _, report = generated
    gate = report["cvae"]["gate"]
    assert gate["passed"], gate
    assert gate["recon_ratio"] < 0.9 and gate["mmd_ratio"] < 0.5


def test_a_table_generator_fills_small_classes_with_valid_rows(penguins_split, tmp_path):
    train = load_arrays(penguins_split / "split" / "train.npz")
    cfg = Augment(copies=0, generator="cvae", device="cpu", cvae=Cvae(balance=True, on_gate_failure="use"))
    report = augment_file(penguins_split / "split", penguins_split / "preprocess", cfg, 0, tmp_path / "t.npz")
    out = load_arrays(tmp_path / "t.npz")
    counts = np.bincount(out["y"])
    assert (counts == counts.max()).all()  # every class filled up to the largest
    assert report["counts"]["generated"] == int((np.bincount(train["y"]).max() - np.bincount(train["y"])).sum())
    added = out["x"][out["origin"] == 2]
    from components.normalise import load_preprocess

    _, preprocessor = load_preprocess(penguins_split / "preprocess")
    for group in preprocessor.onehot_groups():  # island, sex: exactly one category each
        assert np.array_equal(added[:, group].sum(1), np.ones(len(added))) and set(np.unique(added[:, group])) <= {0, 1}
    assert report["cvae"]["gate"]["recon_ratio"] is not None


def test_balance_with_no_class_short_skips_the_fit(penguins_split, tmp_path, caplog):
    cfg = Augment(copies=0, oversample=True, generator="cvae", device="cpu", cvae=Cvae(balance=True))
    with caplog.at_level(logging.WARNING):
        report = augment_file(penguins_split / "split", penguins_split / "preprocess", cfg, 0, tmp_path / "t.npz")
    assert report["cvae"] == {"made": 0, "used": False, "reason": "nothing to make"}
    assert report["counts"]["generated"] == 0 and "no examples to generate" in caplog.text


def test_a_killed_fit_resumes_from_its_checkpoint_to_the_same_generator(digits_split, tmp_path):
    train = load_arrays(digits_split / "split" / "train.npz")
    x = train["raw"].transpose(0, 3, 1, 2).astype(np.float32) / 255
    cfg = Cvae(**(SMALL | {"epochs": 4, "min_steps": 0}))
    path = tmp_path / "cvae.pt"

    def fitted(epochs: int, checkpoint):
        torch.manual_seed(0)
        net = generative.build_cvae(x.shape[1:], 10, cfg)
        generative.fit(net, x, train["y"], 10, cfg.model_copy(update={"epochs": epochs}), 0, "cpu", checkpoint)
        return net

    straight = fitted(4, None)
    fitted(2, path)  # "killed" after epoch 2: its checkpoint is left
    resumed = fitted(4, path)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_params_refuse_a_generator_for_text():
    with pytest.raises(UserError, match="augment.generator cvae is for images and tables"):
        validate_params({"data": {"kind": "text"}, "train": {"arch": "bilstm"}, "augment": {"generator": "cvae"}}, "p")


def test_dvc_repro_with_the_generator_logs_its_report_and_picture_to_mlflow(tmp_path):
    import mlflow

    project = make_project(
        tmp_path / "project", per_class=20, params={"augment": {"generator": "cvae", "cvae": SMALL | {"per_class": 5}}}
    )
    ran = project.repro()
    assert ran == ["clean", "normalise", "augment", "train", "evaluate", "register"]
    report = project.json("reports/augment.json")
    assert report["generator"] == "cvae" and report["counts"]["generated"] == (50 if report["cvae"]["used"] else 0)
    assert (project.root / "reports/plots/augmented.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert project.repro() == []  # nothing changed: nothing runs, the generator included
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    run = client.search_runs([client.get_experiment_by_name("digits").experiment_id])[0]
    assert run.data.metrics["augment_generated"] == report["counts"]["generated"]
    assert run.data.metrics["cvae_mmd_ratio"] == pytest.approx(report["cvae"]["gate"]["mmd_ratio"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/augmented.png" in logged
    assert "plots/augmented.png" in yaml.safe_dump(project.run("dvc", "plots", "show", "--json").stdout)


def test_the_kubeflow_augment_task_fitting_a_generator_is_placed_as_train_is():
    from kfp import compiler

    from components.params import Params
    from pipelines.pipeline import build_pipeline

    params = Params.model_validate(
        {"augment": {"generator": "cvae"}, "kubeflow": {"checkpoint_pvc": "ckpt", "train_retries": 3}}
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.yaml"
        compiler.Compiler().compile(build_pipeline(params), str(out))
        docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    task = spec["root"]["dag"]["tasks"]["augment-step"]
    assert task["retryPolicy"]["maxRetryCount"] == 3
    executor = spec["deploymentSpec"]["executors"][f"exec-{task['componentRef']['name'].removeprefix('comp-')}"]
    resources = executor["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "1" and resources["cpuRequest"] == 2
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-augment-step"]["pvcMount"]
    assert mounts[0]["constant"] == "ckpt"
