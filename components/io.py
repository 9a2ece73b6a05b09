"""Files between stages. Every output is written to a temporary name and renamed into place,
so a stage that fails half-way leaves nothing that DVC (or a person) could take for a result."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import UserError

if TYPE_CHECKING:
    import hashlib

    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON document in path. Raises UserError (also a ValueError) naming the file when it is not UTF-8
    JSON, e.g. a damaged or crafted file; OSError when it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise BadFile(f"{path}: not a JSON file ({type(exc).__name__}); rerun the stage that writes it") from None


class BadFile(UserError, ValueError):
    """A file a stage wrote that does not hold what that stage writes."""


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle flag


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """pd.read_parquet with less memory left behind, which on a table of gigabytes was most of a stage's
    peak: the file is not buffered whole before decoding (pre_buffer pays off on object stores, not on
    local files); Arrow's pool, which keeps what it frees for its own reuse, hands back the decoded pages;
    and on pandas >= 3 the frame comes from malloc, which returns big blocks to the system once dropped."""
    import inspect

    import pandas as pd
    import pyarrow as pa

    options = {}
    if "to_pandas_kwargs" in inspect.signature(pd.read_parquet).parameters:
        options["to_pandas_kwargs"] = {"memory_pool": pa.system_memory_pool()}
    frame = pd.read_parquet(path, columns=columns, pre_buffer=False, **options)
    pa.default_memory_pool().release_unused()
    return frame


def files_digest(paths: Sequence[str | Path]) -> hashlib._Hash:
    """A sha256 object fed with the files' bytes in the order given, read 16 MiB at a time (memory stays
    flat for a split of gigabytes); callers add what else names their result, then take .hexdigest().
    Our .npz files are the same bytes for the same arrays (np.savez dates every member 1980-01-01)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
    return digest
