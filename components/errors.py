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
        if _signalled and not debug:
            # The signal landed inside a library (e.g. SQLAlchemy's commit) whose cleanup then failed with
            # an error of its own, hiding the KeyboardInterrupt: it was still an interruption.
            sys.stderr.write(f"interrupted by signal {_signalled[-1]} ({exc.__class__.__name__} while unwinding)\n")
            sys.exit(130)
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


_signalled: list[int] = []  # the signals received, so an exception raised while unwinding still exits 130
# A KeyboardInterrupt raised inside the database driver cuts a transaction in half and leaves the sqlite
# store locked for the cleanup that follows (seen in CI: register then failed with "database is locked" and
# left its run RUNNING). Inside these packages the interruption waits until control is back in our code.
_DEFER_INSIDE = ("sqlalchemy", "sqlite3")
_RETRY_S = 0.05


def _inside(frame, packages: tuple[str, ...]) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).split(".")[0] in packages:
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame) -> None:
    if not _signalled or _signalled[-1] != signum:
        _signalled.append(signum)
    if _inside(frame, _DEFER_INSIDE):
        # try again in 50 ms; SIGALRM, because a signal handler runs only in the main thread between bytecodes
        signal.signal(signal.SIGALRM, lambda _, later: _interrupt(signum, later))
        signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
        return
    raise KeyboardInterrupt(f"signal {signum}")
