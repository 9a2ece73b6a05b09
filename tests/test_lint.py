"""LINT GATE: `make lint` inside the test suite, so CI (`make test` = pytest) enforces it.

The three commands of `make lint`, configured in pyproject.toml: `ruff check .`, `ruff format --check .`
and `mypy` (components/ and pipelines/). Deselect with `-m 'not lint'`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.lint


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("mypy",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint_is_clean(command):
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{' '.join(command)}: fix these, or run `make lint`\n{result.stdout}{result.stderr}"
