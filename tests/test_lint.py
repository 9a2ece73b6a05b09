"""LINT GATE: `make lint` inside the test suite, so CI (`make test` = pytest) enforces it.

The three commands of `make lint` (configured in pyproject.toml): `ruff check .`, `ruff format --check .`
and `mypy`. Deselect with `-m 'not lint'`.

KNOWN DEBT, marked xfail(strict=True) below: components/ and pipelines/ are being rewritten, and their
findings are left for that rewrite. On 2026-11-30: `ruff check .` 55 findings, all there (the 40 in
tests/ were fixed); `ruff format --check .` 55 files to reformat (22 there, 25 in tests/, 8 in
benchmarks/: formatting the whole tree is one separate commit, after the rewrite); `mypy` 48 errors
in 13 files. While the debt is there those three tests are expected to fail; the day one of them
passes, strict xfail turns it into a failure: delete its marker then, and the command is enforced
from that commit on. Enforced today: `ruff check` of everything outside components/ and pipelines/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.lint

BEING_REWRITTEN = ["components", "pipelines"]
DEBT = "known debt in components/ and pipelines/, left for their rewrite: see this file's docstring"


def run(*cmd: str) -> subprocess.CompletedProcess:
    """The tool from this venv; exit 1 means findings, anything else a broken tool or config, never xfailed."""
    result = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def test_ruff_check_outside_the_rewrite():
    excluded = [arg for folder in BEING_REWRITTEN for arg in ("--extend-exclude", folder)]
    result = run("ruff", "check", ".", *excluded)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEBT)
def test_ruff_check():
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEBT)
def test_ruff_format_check():
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEBT)
def test_mypy():
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
