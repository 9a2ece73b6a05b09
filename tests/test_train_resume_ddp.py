"""Checkpoints, resume after a kill, and data-parallel training (DDP through torchrun, gloo on CPU)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from components.io import read_json, save_arrays
from components.params import Params
from components.train import checkpoint_path
from conftest import REPO, make_project


def state_dict(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def train_cli(
    workdir: Path, params: dict, tag: str, checkpoints: bool = False, check: bool = True
) -> subprocess.CompletedProcess:
    """The train stage's own command line on workdir's train.npz/val.npz; outputs named after `tag`.
    check: assert that it succeeded."""
    (workdir / f"{tag}.yaml").write_text(yaml.safe_dump(params))
    command = [
        sys.executable,
        "-m",
        "components.train",
        "--params",
        str(workdir / f"{tag}.yaml"),
        "--train",
        str(workdir / "train.npz"),
        "--val",
        str(workdir / "val.npz"),
        "--model",
        str(workdir / f"{tag}.pt"),
        "--info",
        str(workdir / f"{tag}.json"),
        "--history",
        str(workdir / f"{tag}.csv"),
    ]
    command += ["--checkpoints", str(workdir / "ck")] if checkpoints else []
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


def test_training_killed_by_sigkill_resumes_in_dvc_repro_and_ends_with_the_same_model(tmp_path):
    epochs = 12
    project = make_project(
        tmp_path / "p", per_class=40, params={"train": {"epochs": epochs, "patience": epochs, "width": 8}}
    )
    project.repro("augment")
    # Killed as soon as the first epoch checkpoint lands: the whole process group, like a preempted node.
    repro = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=project.root,
        env=project.env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = project.root / "outputs" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("train-*.pt")) and repro.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(repro.pid, signal.SIGKILL)
    repro.wait()
    [checkpoint] = checkpoints.glob("train-*.pt")
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_after < epochs, "the kill must land mid-training for this test to mean anything"
    assert not (project.root / "outputs" / "model.pt").exists()

    result = project.run("dvc", "repro")
    assert f"resuming after epoch {killed_after}" in result.stderr
    history = (project.root / "reports" / "plots" / "training.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(1, epochs + 1))
    assert not list(checkpoints.iterdir()), "a finished run removes its checkpoint"

    # The same training, never interrupted, gives bit-identical weights (CPU is deterministic).
    workdir = tmp_path / "uninterrupted"
    workdir.mkdir()
    for name, source in (("train.npz", "outputs/augmented/train.npz"), ("val.npz", "outputs/split/val.npz")):
        (workdir / name).write_bytes((project.root / source).read_bytes())
    train_cli(workdir, yaml.safe_load((project.root / "params.yaml").read_text()), "reference")
    resumed, reference = state_dict(project.root / "outputs" / "model.pt"), state_dict(workdir / "reference.pt")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    assert project.json("reports/metrics.json")["macro_f1"] > 0.8


def test_a_changed_param_never_resumes_a_foreign_checkpoint(tmp_path):
    workdir = table_data(tmp_path)
    params = {"seed": 3, "train": {"epochs": 3, "patience": 3, "hidden": [16], "batch_size": 40, "device": "cpu"}}
    train_cli(workdir, params, "first", checkpoints=True)
    # A checkpoint of another run (lr differs) lies in the folder: the new run must not start from it.
    (workdir / "ck").mkdir(exist_ok=True)
    other = {**params, "train": {**params["train"], "lr": 0.01}}
    result = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_ONE_EPOCH, str(workdir), yaml.safe_dump(other)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((workdir / "ck").glob("train-*.pt"))) == 1
    again = train_cli(workdir, params, "again", checkpoints=True)
    assert "resuming" not in again.stderr
    for key, value in state_dict(workdir / "first.pt").items():
        assert torch.equal(value, state_dict(workdir / "again.pt")[key])

    # A damaged checkpoint of this very run (a crash on a network volume) is dropped, not fatal.
    own = checkpoint_path(
        workdir / "ck", [workdir / "train.npz", workdir / "val.npz"], Params.model_validate(params), 1
    )
    own.write_bytes(b"truncated")
    damaged = train_cli(workdir, params, "damaged", checkpoints=True)
    assert "ignoring unreadable checkpoint" in damaged.stderr and not own.exists()
    for key, value in state_dict(workdir / "first.pt").items():
        assert torch.equal(value, state_dict(workdir / "damaged.pt")[key])


# Leaves a one-epoch checkpoint behind, as a run killed after its first epoch would.
STOP_AFTER_ONE_EPOCH = """
import sys, yaml
from pathlib import Path
from components.io import load_arrays
from components.params import Params
from components.train import checkpoint_path, fit
workdir, params = Path(sys.argv[1]), Params.model_validate(yaml.safe_load(sys.argv[2]))
files = [workdir / "train.npz", workdir / "val.npz"]
train, val = load_arrays(files[0]), load_arrays(files[1])
fit(train["x"], train["y"], val["x"], val["y"], 3, params.train.model_copy(update={"epochs": 1}), params.seed,
    checkpoint=checkpoint_path(workdir / "ck", files, params, 1))
"""


def table_data(tmp_path: Path, n: int = 480) -> Path:
    """Three separable classes of 12-feature rows; n a multiple of the batch size and of 2 processes."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 12)) + y[:, None] * 2.0).astype(np.float32)
    vy = rng.integers(0, 3, 120)
    vx = (rng.normal(size=(120, 12)) + vy[:, None] * 2.0).astype(np.float32)
    workdir = tmp_path / "table"
    workdir.mkdir()
    classes = np.array(["a", "b", "c"])
    save_arrays(workdir / "train.npz", x=x, y=y, classes=classes)
    save_arrays(workdir / "val.npz", x=vx, y=vy, classes=classes)
    return workdir


def test_ddp_on_two_cpu_processes_equals_one_process_on_the_same_global_batch(tmp_path):
    """A linear model (no dropout, no batch norm): DDP's averaged gradients over two disjoint halves of
    each batch are the single process's gradient on the whole batch. Overlapping or repeated shards,
    or gradients not all-reduced, would give other weights."""
    workdir = table_data(tmp_path)
    train = {"epochs": 8, "patience": 8, "lr": 0.03, "hidden": [], "batch_size": 40, "device": "cpu"}
    single = train_cli(workdir, {"seed": 5, "train": {**train, "gpus": 1}}, "single")
    ddp = train_cli(workdir, {"seed": 5, "train": {**train, "gpus": 2}}, "ddp", checkpoints=True)
    assert "starting 2 data-parallel processes with torchrun" in ddp.stderr and "torchrun" not in single.stderr
    assert read_json(workdir / "ddp.json")["processes"] == 2 and read_json(workdir / "single.json")["processes"] == 1
    a, b = state_dict(workdir / "single.pt"), state_dict(workdir / "ddp.pt")
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved < 1e-4, f"DDP weights differ from one process by {moved}"
    single_loss, ddp_loss = (
        [float(row.split(",")[1]) for row in (workdir / f"{t}.csv").read_text().splitlines()[1:]]
        for t in ("single", "ddp")
    )
    np.testing.assert_allclose(single_loss, ddp_loss, rtol=1e-4)
    assert not list((workdir / "ck").iterdir())
    # And it learnt something: the three classes are separable.
    assert read_json(workdir / "ddp.json")["best_val_macro_f1"] > 0.75


def test_ddp_bad_input_is_one_line_naming_the_file_before_any_worker_starts(tmp_path):
    workdir = table_data(tmp_path)
    (workdir / "val.npz").write_bytes(b"not an npz")
    result = train_cli(workdir, {"train": {"gpus": 2, "device": "cpu", "epochs": 1}}, "failing", check=False)
    assert result.returncode == 1 and "starting 2 data-parallel processes" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {workdir / 'val.npz'}: not a readable .npz file (ValueError); rerun the stage that writes it "
        "(dvc repro)"
    ]
    assert not (workdir / "failing.pt").exists()


def test_ddp_worker_failure_is_one_line_naming_whichever_worker_failed_first(tmp_path):
    """Every worker meets this input (validation rows of another width) at the same moment; whichever fails
    first is named, with its own error, on one line, and no advice to resume."""
    workdir = table_data(tmp_path)
    save_arrays(workdir / "val.npz", x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.int64))
    result = train_cli(workdir, {"train": {"gpus": 2, "device": "cpu", "epochs": 1}}, "failing", check=False)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert re.fullmatch(
        rf"error: train: torchrun worker [01] failed: error: {re.escape(str(workdir))}/val.npz: "
        r"examples of shape \(5,\), but .*train.npz holds \(12,\); rerun the stages before train "
        r"\(dvc repro\)",
        errors[0],
    ), errors[0]
    assert "Traceback" not in result.stderr and not (workdir / "failing.pt").exists()


def children(pid: int) -> list[int]:
    """Process ids whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ddp_worker_killed_is_one_line_that_says_rerun_resumes(tmp_path):
    """A worker killed from outside (the OOM killer, a preempted node): rerunning is the right advice."""
    workdir = table_data(tmp_path)
    (workdir / "long.yaml").write_text(
        yaml.safe_dump({"train": {"gpus": 2, "device": "cpu", "epochs": 10_000, "patience": 10_000}})
    )
    command = [
        sys.executable,
        "-m",
        "components.train",
        "--params",
        str(workdir / "long.yaml"),
        "--train",
        str(workdir / "train.npz"),
        "--val",
        str(workdir / "val.npz"),
        "--model",
        str(workdir / "m.pt"),
        "--info",
        str(workdir / "m.json"),
        "--history",
        str(workdir / "m.csv"),
    ]
    launcher = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(workers := children(launcher.pid)) < 2 and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.1)
    early = launcher.stderr.read()[-2000:] if launcher.poll() is not None else ""  # e.g. params refused
    assert len(workers) == 2, f"both torchrun workers should have started {early}"
    time.sleep(2)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: train: torchrun worker [01] failed \(killed by SIGKILL\); if it was killed \(out of "
        r"memory, a preempted node\), rerun and training resumes from the last epoch checkpoint",
        last,
    ), last
    assert "Traceback" not in stderr


def test_ddp_in_dvc_repro_on_cpu(tmp_path):
    project = make_project(tmp_path / "p", per_class=40, params={"train": {"gpus": 2, "device": "cpu"}})
    assert "train" in project.repro("evaluate")
    assert project.json("outputs/train_info.json")["processes"] == 2
    assert project.json("reports/metrics.json")["macro_f1"] > 0.8
