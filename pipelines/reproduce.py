"""Rerun the pipeline that made a registered model version, and say whether it gives the same model.

    python -m pipelines.reproduce models:/NAME/3 [--keep]

From the version's tags and run (written by register): a temporary git worktree at its commit, its raw
data restored by the DVC md5 it recorded (from this repo's DVC cache, else its remote), its params as the
run logged them (params.yaml artifact), then `dvc repro --force evaluate` there: every stage rerun, nothing
registered. Exit 0 when the weights hash and every test metric equal the registered ones, 1 with the
differences. Bitwise equality is promised on CPU; a model trained on a GPU is only expected to be close.
The worktree runs that commit's code with the packages installed here.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from components.errors import UserError, run_cli

log = logging.getLogger(__name__)


def registered(uri: str) -> dict:
    """What register recorded for a version: its tags, its run's test metrics and the params it logged."""
    import mlflow

    from components import tracking

    tracking.configure()
    client = mlflow.MlflowClient()
    found = tracking.model_version(uri, "", "nothing was rerun")
    tags = found.tags
    missing = [tag for tag in ("git_commit", "weights_hash") if tag not in tags]
    if missing or found.run_id is None:
        raise UserError(
            f"{uri}: has no {', '.join(missing) or 'run'}: it was registered before register "
            "recorded what it takes to rerun it; only later versions can be reproduced"
        )
    metrics = {
        key.removeprefix("test_"): value
        for key, value in client.get_run(found.run_id).data.metrics.items()
        if key.startswith("test_") and not key.startswith("test_f1_class_")
    }
    try:
        params = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{found.run_id}/params.yaml"))
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise UserError(
            f"{uri}: its run {found.run_id} has no params.yaml artifact; only versions registered "
            "since register logs it can be reproduced"
        ) from None
    return {"name": found.name, "version": str(found.version), "tags": tags, "metrics": metrics, "params": params}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise UserError(f"git {' '.join(args)}: {reason}")
    return result.stdout.strip()


def prepare_worktree(project: Path, tree: Path, record: dict) -> Path:
    """A detached worktree at the version's commit with its params and data pointer; returns the project
    folder inside it (the same place relative to the git root as `project`)."""
    tags = record["tags"]
    commit = tags["git_commit"]
    if commit == "unknown":
        raise UserError(f"version {record['version']} was not built in a git repository: no commit to rerun")
    top = Path(git("rev-parse", "--show-toplevel", cwd=project))
    try:
        git("cat-file", "-e", f"{commit}^{{commit}}", cwd=project)
    except UserError:
        raise UserError(
            f"commit {commit[:12]} of version {record['version']} is not in this repository; "
            "fetch it (git fetch) and rerun"
        ) from None
    git("worktree", "add", "--detach", str(tree), commit, cwd=project)
    inner = tree / project.resolve().relative_to(top.resolve())
    (inner / "params.yaml").write_text(yaml.safe_dump(record["params"], sort_keys=False))

    # Same DVC cache (the data and outputs are there already) and the same local remote settings.
    local_config = project / ".dvc" / "config.local"
    if local_config.exists():
        shutil.copy(local_config, inner / ".dvc" / "config.local")
    dvc(inner, "cache", "dir", "--local", str((project / ".dvc" / "cache").resolve()))
    recorded = tags.get("dvc_data_md5", "unknown")
    pointer = inner / "data.dvc"
    if recorded != "unknown" and pointer.exists():
        spec = yaml.safe_load(pointer.read_text())
        if spec["outs"][0].get("md5") != recorded:
            log.warning(
                "data.dvc at %s says %s but the version recorded %s: restoring the recorded data",
                commit[:12],
                spec["outs"][0].get("md5"),
                recorded,
            )
            spec["outs"][0] = {"md5": recorded, "hash": "md5", "path": spec["outs"][0]["path"]}
            pointer.write_text(yaml.safe_dump(spec, sort_keys=False))
    if pointer.exists():
        dvc(inner, "pull", "--quiet", "data.dvc")
    return inner


def dvc(cwd: Path, *args: str, show: bool = False) -> None:
    """Run the dvc next to this Python (the one stages need), failing with DVC's last line. If this process
    is interrupted (Ctrl-C, SIGTERM), dvc is stopped too before the worktree is removed under it."""
    bin_dir = Path(os.path.abspath(sys.executable)).parent  # not resolve(): the venv's python is a symlink
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"} | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    }
    child = subprocess.Popen(
        [str(bin_dir / "dvc"), *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=None if show else subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = child.communicate()
    except BaseException:
        child.terminate()
        child.wait(timeout=60)
        raise
    if child.returncode != 0:
        last = (output or "").strip().splitlines()[-1:] or ["see the output above"]
        raise UserError(f"dvc {' '.join(args)} in the worktree failed: {last[0]}")


def compare(record: dict, project: Path, tolerance: float) -> list[str]:
    """The differences between the registered version and the rerun in `project` ([] when they match)."""
    from components.io import read_json
    from components.model import weights_hash

    differences = []
    rerun_hash = weights_hash(project / "outputs" / "model.pt")
    if rerun_hash != record["tags"]["weights_hash"]:
        differences.append(
            f"weights_hash: registered {record['tags']['weights_hash'][:16]}..., rerun {rerun_hash[:16]}..."
        )
    rerun = read_json(project / "reports" / "metrics.json")
    for key, value in sorted(record["metrics"].items()):
        if key not in rerun:
            differences.append(f"test_{key}: registered {value}, absent from the rerun's metrics.json")
        elif not math.isclose(float(rerun[key]), value, rel_tol=0, abs_tol=tolerance):
            differences.append(f"test_{key}: registered {value:.6f}, rerun {float(rerun[key]):.6f}")
    return differences


def reproduce(uri: str, project: Path = Path("."), keep: bool = False, tolerance: float = 1e-9) -> list[str]:
    """Rerun the version's pipeline in a temporary worktree; returns the differences ([] = reproduced).
    Raises UserError for a project folder without dvc.yaml, a negative tolerance, or a version it cannot rerun."""
    if not (project / "dvc.yaml").exists():
        raise UserError(
            f"{project.resolve()}: no dvc.yaml here; run python -m pipelines.reproduce from the project "
            "root, where its git repository, DVC cache and MLflow store are"
        )
    if tolerance < 0:
        raise UserError(f"--tolerance {tolerance}: must be 0 or more (an absolute difference per metric)")
    record = registered(uri)
    tags = record["tags"]
    if tags.get("git_dirty") == "true" and tags["git_commit"] != "unknown":
        log.warning(
            "version %s was built from uncommitted changes to commit %s: its params are applied, "
            "but any code change then is not in the worktree",
            record["version"],
            tags["git_commit"][:12],
        )
    if tags.get("device", "cpu") != "cpu":
        log.warning(
            "version %s was trained on %s; this rerun trains as params.yaml says, and only CPU runs are "
            "promised bitwise equal",
            record["version"],
            tags["device"],
        )
    tree = Path(tempfile.mkdtemp(prefix="reproduce-")) / "tree"
    try:
        inner = prepare_worktree(project, tree, record)
        log.info(
            "rerunning %s version %s at %s in %s", record["name"], record["version"], tags["git_commit"][:12], inner
        )
        dvc(inner, "repro", "--force", "evaluate", show=True)
        return compare(record, inner, tolerance)
    finally:
        if keep:
            log.info("kept the worktree: %s (remove it with: git worktree remove --force %s)", tree, tree)
        else:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=project, capture_output=True)
            shutil.rmtree(tree.parent, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=project, capture_output=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.reproduce", description="Rerun a registered model version's pipeline and compare."
    )
    parser.add_argument("model_uri", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    parser.add_argument("--keep", action="store_true", help="keep the temporary worktree to inspect it")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="absolute tolerance on each test metric")
    args = parser.parse_args(argv)
    differences = reproduce(args.model_uri, keep=args.keep, tolerance=args.tolerance)
    if differences:
        print(f"{args.model_uri}: NOT reproduced:")
        for line in differences:
            print(f"  {line}")
        sys.exit(1)
    print(f"{args.model_uri}: reproduced: same weights hash and test metrics")


if __name__ == "__main__":
    run_cli(main)
