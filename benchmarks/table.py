"""Benchmark #4: clean + normalise of a large numeric table against a hand-written pandas script.

A seeded synthetic Parquet table (rows x cols float64 features with a few NaNs, a few duplicate rows,
a 5-class text target with a few gaps) goes through our two stages by their real CLIs and through
benchmarks/table_baseline.py, each a child process timed by wall clock and measured for peak RSS
(os.wait4's ru_maxrss). Goals: clean_normalise_ratio = baseline_s / ours_s >= 1.0, and our peak RSS at
most 3x the table's in-memory float64 size.

    from benchmarks.table import run; run(rows=1_000_000)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET = "label"
CLASSES = 5
CHUNK_ROWS = 1_000_000  # generated and written a row group at a time: the parent stays small
NAN_RATE = 0.001  # per feature value
MISSING_TARGET_RATE = 0.0002
DUPLICATE_RATE = 0.0005  # rows that repeat an earlier row of their chunk exactly


def make_table(path: Path, rows: int, cols: int, seed: int = 0) -> None:
    """Write the synthetic table to path (Parquet, pyarrow); the same rows for the same arguments."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(cols)]
    labels = np.array([f"class_{c}" for c in range(CLASSES)], dtype=object)
    schema = pa.schema([(name, pa.float64()) for name in names] + [(TARGET, pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            classes = rng.integers(0, CLASSES, n)
            # features shifted by class, so the table is learnable, on different scales per column
            x = rng.standard_normal((n, cols)) * np.arange(1, cols + 1) + classes[:, None]
            copies = rng.choice(n, int(n * DUPLICATE_RATE), replace=False)
            originals = rng.integers(0, n, len(copies))
            x[copies], classes[copies] = x[originals], classes[originals]
            x[rng.random((n, cols)) < NAN_RATE] = np.nan
            target = pa.array(labels[classes], pa.string(), mask=rng.random(n) < MISSING_TARGET_RATE)
            columns = [pa.array(x[:, i]) for i in range(cols)] + [target]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def measure(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a child process from the repo root (env: its environment, default this one's); its wall time in s
    and peak RSS in GB. Fails loudly."""
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with child.stdout:
        output = child.stdout.read()  # drain the pipe so a chatty child cannot block on it
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({child.returncode}):\n{output.decode()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def ours(workdir: Path, data: Path) -> tuple[float, float]:
    """python -m components.clean, then components.normalise, with default clean/split/normalise params."""
    import yaml

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"kind": "tabular", "path": str(data), "target": TARGET}}))
    out = workdir / "ours"
    clean_s, clean_gb = measure(
        [
            sys.executable,
            "-m",
            "components.clean",
            "--params",
            str(params),
            "--out",
            str(out / "clean"),
            "--report",
            str(out / "clean.json"),
        ]
    )
    norm_s, norm_gb = measure(
        [
            sys.executable,
            "-m",
            "components.normalise",
            "--params",
            str(params),
            "--clean",
            str(out / "clean"),
            "--out",
            str(out / "split"),
            "--preprocess",
            str(out / "preprocess"),
        ]
    )
    return clean_s + norm_s, max(clean_gb, norm_gb)


def baseline(workdir: Path, data: Path) -> tuple[float, float]:
    from components.params import Params

    defaults = Params()
    return measure(
        [
            sys.executable,
            "-m",
            "benchmarks.table_baseline",
            str(data),
            str(workdir / "baseline"),
            "--target",
            TARGET,
            "--val",
            str(defaults.split.val_fraction),
            "--test",
            str(defaults.split.test_fraction),
            "--seed",
            str(defaults.seed),
        ]
    )


def run(rows: int = 10_000_000, cols: int = 20, workdir: Path | None = None) -> dict:
    """Generate the table, run ours and the baseline on it, and return the figures.

    Outputs stay in workdir when one is given: ours/split/{train,val,test}.npz, baseline/{...}.npz;
    without one, a temporary folder is used and removed."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
            return run(rows, cols, Path(tmp))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "table.parquet"
    make_table(data, rows, cols)
    baseline_s, baseline_gb = baseline(workdir, data)
    ours_s, ours_gb = ours(workdir, data)
    table_gb = rows * cols * 8 / 1e9
    return {
        "clean_normalise_s": round(ours_s, 3),
        "clean_normalise_baseline_s": round(baseline_s, 3),
        "clean_normalise_ratio": round(baseline_s / ours_s, 3),
        "clean_normalise_peak_rss_gb": round(ours_gb, 3),
        "clean_normalise_baseline_peak_rss_gb": round(baseline_gb, 3),
        "table_gb": table_gb,
        "clean_normalise_peak_rss_ratio": round(ours_gb / table_gb, 3),
        "table_rows": rows,
        "table_cols": cols,
    }
