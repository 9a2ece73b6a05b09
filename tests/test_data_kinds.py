"""The stages are the same for every kind of data: what depends on the kind is asked of its module
(components/kinds/), so a new kind is one module, a params section and tests (docs/data-kinds.md)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from components import kinds
from components.errors import UserError
from components.kinds.base import DataKind

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["clean", "normalise", "augment", "train", "evaluate", "register", "predict", "scoring", "serving"]


def kind_branches(source: str) -> list[str]:
    """Where the code names a kind or compares a `kind`: a kind name as a string, or a comparison involving
    x.kind, x["kind"] or x.get("kind"). The Kubeflow *_step wrappers are left out: they are moving to
    pipelines/steps.py."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.endswith("_step"):
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in kinds.KINDS:
            found.append(f"line {node.lineno}: the kind name {node.value!r}")
        if isinstance(node, ast.Compare) and any(names_kind(part) for part in ast.walk(node)):
            found.append(f"line {node.lineno}: a comparison of a kind")
    return found


def names_kind(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "kind"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "kind"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "kind"
    return False


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_branches_on_the_kind_of_data(stage):
    assert kind_branches((ROOT / "components" / f"{stage}.py").read_text()) == []


@pytest.mark.parametrize(
    "branch",
    [
        'if meta["kind"] == "image_folder":\n    pass',  # augment and normalise before components/kinds/
        'if meta.get("kind") == "tabular":\n    pass',  # predict and serving
        "if data.kind == other:\n    pass",
        'reader = {"tabular": read_table}',
    ],
)
def test_the_check_finds_a_branch_on_the_kind(branch):
    assert kind_branches(branch)


def test_the_check_leaves_the_kubeflow_wrappers_alone():
    assert kind_branches('def clean_step():\n    if params.data.kind == "tabular":\n        pass') == []


def protocol_members() -> tuple[list[str], list[str]]:
    """(attributes, methods) of DataKind."""
    methods = [name for name, value in vars(DataKind).items() if inspect.isfunction(value) and not name.startswith("_")]
    return list(DataKind.__annotations__), methods


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_every_kind_module_is_a_data_kind(name):
    kind = kinds.get(name)
    assert isinstance(kind, DataKind)
    attributes, methods = protocol_members()
    assert all(isinstance(getattr(kind, attribute), tuple) for attribute in attributes)
    for method in methods:
        wanted = list(inspect.signature(getattr(DataKind, method)).parameters.values())[1:]  # without self
        given = list(inspect.signature(getattr(kind, method)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in given] == [(p.name, p.kind, p.default) for p in wanted], method


def test_the_kinds_claim_distinct_model_inputs_and_networks():
    images, tables = np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 5), np.float32)
    token_ids = np.zeros((2, 16), np.int64)
    assert kinds.for_model_input(images) is kinds.get("image_folder")
    assert kinds.for_model_input(tables) is kinds.get("tabular")
    assert kinds.for_model_input(token_ids) is kinds.get("text")
    for x in (images, tables, token_ids):
        assert sum(kind.is_model_input(x) for kind in kinds.KINDS.values()) == 1
    networks = [arch for kind in kinds.KINDS.values() for arch in kind.NETWORKS]
    assert len(networks) == len(set(networks))
    with pytest.raises(UserError, match="no data kind's network"):
        kinds.for_network({"arch": "gpt"})


def test_an_unknown_kind_is_one_line_naming_data_kind_and_the_known_ones():
    with pytest.raises(UserError) as failure:
        kinds.get("audio")
    message = str(failure.value)
    assert "\n" not in message and "data.kind 'audio'" in message
    assert all(name in message for name in kinds.KINDS)


def test_a_folder_given_as_a_table_names_it_and_says_what_to_set(tmp_path):
    """A tables data.path that is a folder (e.g. the image sample) is one line saying so, not a missing file
    inside it; a folder holding just the table file (as Kubeflow's fetch writes it) is read."""
    from components.params import Clean, Data

    (tmp_path / "images" / "0").mkdir(parents=True)
    (tmp_path / "images" / "1").mkdir()
    data = Data(kind="tabular", path=str(tmp_path / "images"), target="y")
    with pytest.raises(UserError, match=r"images: a folder \(0 files, 2 folders\), not a table file; .*data.path"):
        kinds.get("tabular").read_clean(tmp_path / "images", data, Clean())

    (tmp_path / "fetched").mkdir()
    (tmp_path / "fetched" / "renamed.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    cleaned = kinds.get("tabular").read_clean(tmp_path / "fetched", data, Clean())
    assert len(cleaned.ids) == 20 and sorted(set(cleaned.labels)) == ["0", "1"]
