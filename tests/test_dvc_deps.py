"""dvc.yaml knows all the code a stage runs: editing any project module reruns exactly the stages that import it.

A stage's project .py deps must equal the import closure of its `python -m components.X` (tests/import_closure.py);
then a real `dvc status` in a copy of the repo shows an edited shared module as a changed dep of those stages only.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from import_closure import import_closure

from conftest import BIN, REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def entry_path(entry) -> str:
    """A deps/outs/plots/metrics entry is a path, or {path: options}."""
    return entry if isinstance(entry, str) else next(iter(entry))


def stage_module(stage: dict) -> str:
    found = re.search(r"python -m (components(?:\.\w+)+)", stage["cmd"])
    assert found, f"no `python -m components.X` in {stage['cmd']!r}"
    return found.group(1)


def closure_of(name: str) -> set[str]:
    return {str(path) for path in import_closure(REPO, stage_module(STAGES[name]))}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_depends_on_exactly_the_project_code_it_imports(name):
    declared = {entry_path(dep) for dep in STAGES[name].get("deps", []) if entry_path(dep).endswith(".py")}
    imported = closure_of(name)
    assert declared == imported, (
        f"dvc.yaml stage {name!r}: add to deps {sorted(imported - declared)}, "
        f"remove from deps {sorted(declared - imported)} (import closure of "
        f"{stage_module(STAGES[name])}, from tests/import_closure.py)"
    )


def interpolate(path: str, params: dict) -> str:
    """'${data.path}' -> params['data']['path'], as DVC reads dvc.yaml."""

    def lookup(match: re.Match) -> str:
        value = params
        for key in match.group(1).split("."):
            value = value[key]
        return str(value)

    return re.sub(r"\$\{([\w.]+)\}", lookup, path)


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # the venv's dvc, as conftest's
    result = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}"
    return result.stdout


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory) -> Path:
    """The repo's tracked files as they are in the working tree (uncommitted edits included), with every stage's
    outputs and data present as placeholder files and `dvc commit` run: a pipeline DVC sees as up to date, whose
    dvc.lock holds this code's hashes. Nothing is trained; the repo's own dvc.lock is untouched."""
    root = tmp_path_factory.mktemp("dvc-deps") / "repo"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for relative in filter(None, tracked.stdout.split("\0")):
        if (REPO / relative).is_file():  # a tracked file deleted in the working tree is skipped
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, root / relative)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    paths = {
        interpolate(entry_path(entry), params)
        for stage in STAGES.values()
        for section in ("deps", "outs", "plots", "metrics")
        for entry in stage.get(section, [])
    }
    for relative in sorted(paths, key=lambda p: -p.count("/")):  # outputs/split/val.npz before outputs/split
        if not (root / relative).exists():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text("placeholder\n")
    dvc(root, "commit", "--force", "--quiet", *STAGES)
    assert json.loads(dvc(root, "status", "--json", *STAGES)) == {}, "the copy's pipeline must start up to date"
    return root


@pytest.mark.parametrize(
    "module", ["components/io.py", "components/params.py", "components/table_files.py", "components/model.py"]
)
def test_editing_a_shared_module_changes_exactly_the_stages_that_import_it(committed_copy, module):
    original = (committed_copy / module).read_bytes()
    (committed_copy / module).write_bytes(original + b"# an edit, made by tests/test_dvc_deps.py\n")
    try:
        status = json.loads(dvc(committed_copy, "status", "--json", *STAGES))
    finally:
        (committed_copy / module).write_bytes(original)
    importers = {name for name in STAGES if module in closure_of(name)}
    noticed = {
        name
        for name, entries in status.items()
        if any(entry.get("changed deps", {}).get(module) == "modified" for entry in entries if isinstance(entry, dict))
    }
    mentioned = {name for name, entries in status.items() if module in json.dumps(entries)}
    assert (noticed, mentioned) == (importers, importers), (
        f"after editing {module}, `dvc status` should show it as a modified dep of {sorted(importers)}; "
        f"stages that miss it: {sorted(importers - noticed)}, stages that should not mention it: "
        f"{sorted(mentioned - importers)}\n{json.dumps(status, indent=1)[:3000]}"
    )
