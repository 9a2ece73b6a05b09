"""params.yaml is read through one typed schema; outputs appear whole or not at all; data.dvc matches data/."""
from __future__ import annotations

import subprocess

import pytest

from components.errors import UserError
from components.io import atomic_path, write_json
from components.params import Params, load_params
from conftest import BIN, REPO


def test_shipped_params_validate_and_match_the_schema_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.data.path == "data/digits" and params.register.model_name == "digits-classifier"
    assert params.register.min_macro_f1 == 0.9 and params.register.require_significance is True
    assert params == Params(), "params.yaml and the schema defaults should say the same"


@pytest.mark.parametrize("text, message", [
    ("train: {epochs: many}\n", "train.epochs: Input should be a valid integer"),
    ("train: {epocs: 3}\n", "train.epocs: unknown key (did you mean 'train.epochs'?); fix or remove it"),
    ("trian: {epochs: 3}\n", "trian: unknown key (did you mean 'train'?)"),
    ("data: {csv: {seperator: ';'}}\n", "data.csv.seperator: unknown key (known keys here: sep, decimal,"),
    ("data: {csv: {sep: ';;'}}\n", "data.csv: data.csv.sep must be one character, got ';;'"),
    ("data: {csv: {encoding: utf9}}\n", "data.csv.encoding 'utf9' is not a text encoding Python knows"),
    ("data: {csv: {encoding: rot13}}\n", "data.csv.encoding 'rot13' is not a text encoding Python knows"),
    ("data:\n  background: #ff0000\n", "data.background is empty; write a colour name, or quote a hex colour"),
    ("data: {background: blu}\n", "data.background 'blu' is not a colour"),
    ("split: {val_fraction: 0.5, test_fraction: 0.45}\n", "split: val_fraction + test_fraction"),
    ("train: [unclosed\n", "not valid YAML"),
])
def test_bad_params_give_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=f"^{path}: .*") as info:
        load_params(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("stage died")
    assert list((tmp_path / "out").iterdir()) == []
    write_json(target, {"ok": 1})
    assert target.read_text() == '{\n  "ok": 1\n}\n'


def test_sample_data_matches_data_dvc_exactly():
    """`make` pulls data/ from the in-repo DVC remote; DVC must see it as exactly what data.dvc records."""
    assert (REPO / "data" / "digits").is_dir(), "run `make data` (part of `make test`) first"
    result = subprocess.run([str(BIN / "dvc"), "status", "--json", "data.dvc"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "{}"
    assert sum(1 for p in (REPO / "data" / "digits").rglob("*.png")) == 1797
    assert (REPO / "data" / "penguins" / "penguins.csv").read_text().count("\n") == 345    # header + 344 rows
