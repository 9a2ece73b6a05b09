"""Benchmark #6: reading a CSV as written (components/table_files.py) against a plain `pd.read_csv`.

Reading as written costs a pass with Python's csv module (the physical line of every row, the field
count of every row) and reading every cell as text before parsing numbers, markers and thousands
separators ourselves. The baseline is what the project did before: `pd.read_csv(path)` with pandas'
own type inference. The figure is the cost ratio (ours / baseline), not a speed-up.

    from benchmarks.csv_read import run; run(rows=1_000_000)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

COLS = 10


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """rows x (10 float columns, 1 three-valued category, a 3-class target), as pandas writes CSV."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"f{i}": rng.normal(size=rows).round(4) for i in range(COLS)})
    frame["colour"] = rng.choice(["red", "green", "blue"], rows)
    frame["y"] = rng.choice(["a", "b", "c"], rows)
    frame.to_csv(path, index=False)


def ours(path: Path) -> pd.DataFrame:
    from components.params import Csv
    from components.table_files import read_column, read_labels, read_table

    table = read_table(path)
    columns = {c: read_column(table, c, None, Csv(), table.read["decimal"]).values for c in table.frame.columns[:-1]}
    columns["y"] = read_labels(table.frame["y"])[0]
    return pd.DataFrame(columns)


def run(rows: int = 1_000_000, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(workdir or tmp) / "table.csv"
        make_csv(path, rows)
        start = time.perf_counter()
        plain = pd.read_csv(path)
        baseline_s = time.perf_counter() - start
        start = time.perf_counter()
        read = ours(path)
        ours_s = time.perf_counter() - start
        size_mb = round(path.stat().st_size / 1e6, 1)
    assert read.shape == plain.shape and np.allclose(read["f0"], plain["f0"]), "both must read the same table"
    return {
        "csv_read_s": round(ours_s, 3),
        "csv_read_baseline_s": round(baseline_s, 3),
        "csv_read_cost_ratio": round(ours_s / baseline_s, 3),
        "csv_rows": rows,
        "csv_mb": size_mb,
    }
