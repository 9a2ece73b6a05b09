"""One-line errors for people, tracebacks only when asked for (--debug or LOG_LEVEL=DEBUG)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable


class UserError(Exception):
    """Bad input or configuration: the message names the file/column/row and says what to do."""


def shorten(value, limit: int = 80) -> str:
    """repr(value) for a message, at most about `limit` characters: a longer one is cut, with an ellipsis
    and the full length, so that a 1 GiB cell or a pasted file never fills the terminal or a log.
    Every data value quoted in an error goes through this."""
    quoted = isinstance(value, str)
    text = value if quoted else str(value)
    if len(text) <= limit:
        return repr(text) if quoted else text
    head = repr(text[:limit]) if quoted else text[:limit]
    cut = f"{head[:-1]}...{head[-1]}" if quoted else f"{head}..."
    return f"{cut} ({len(text):,} characters)"


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"


def run_cli(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's CLI; turn any failure into one line on stderr and exit code 1."""
    argv = sys.argv[1:] if argv is None else argv
    debug = debug_requested(argv)
    logging.basicConfig(
        level=logging.DEBUG if debug else getattr(logging, os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    unwind_on_sigterm()
    try:
        main([a for a in argv if a != "--debug"])
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        kind = "error" if isinstance(exc, UserError) else f"error ({exc.__class__.__name__})"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        line = f"{kind}: {message}" + ("" if isinstance(exc, UserError) else " (rerun with --debug for details)")
        if os.environ.get("TORCHELASTIC_ERROR_FILE"):
            # A torchrun worker: its launcher reports the line once, naming the worker, instead of every
            # worker printing at the same moment onto one line.
            with open(os.environ["TORCHELASTIC_ERROR_FILE"], "w") as fh:
                json.dump({"message": line, "timestamp": int(time.time())}, fh)
        else:
            sys.stderr.write(line + "\n")  # one write, not print's two: another process cannot split it
            sys.stderr.flush()
        sys.exit(1)


def unwind_on_sigterm() -> None:
    """SIGTERM (Kubeflow deleting a pod, `kill`) unwinds like Ctrl-C, so an open MLflow run is ended as
    FAILED by its context manager instead of being left RUNNING."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
