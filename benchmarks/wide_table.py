"""Benchmark #7: the clean stage on wide CSV files (few rows, up to 100 000 columns) against a plain
`pd.read_csv` of the same file, for several rows x columns shapes. Cleaning must grow linearly with the
columns: the time per column (ours_s / columns) should stay about the same from shape to shape.

    from benchmarks.wide_table import run; run(shapes=[(20, 1_000), (20, 10_000), (20, 100_000)])
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = [(20, 1_000), (20, 10_000), (20, 100_000), (1_000, 10_000)]
QUICK_SHAPES = [(20, 200), (20, 2_000)]


def make_csv(path: Path, rows: int, columns: int, seed: int = 0) -> None:
    """rows x (columns float features with 3 decimals, one in ten cells of column 0 empty, a 2-class target)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, columns)).round(3), columns=[f"f{i}" for i in range(columns)])
    frame.loc[::10, "f0"] = np.nan
    frame["y"] = np.array(["a", "b"])[np.arange(rows) % 2]
    frame.to_csv(path, index=False)


def clean(path: Path, out: Path) -> dict:
    """What `python -m components.clean` does on this file (in process, so imports are not timed)."""
    from components.clean import clean_dataset
    from components.params import Params

    params = Params.model_validate(
        {
            "data": {"kind": "tabular", "path": str(path), "target": "y"},
            "split": {"val_fraction": 0.2, "test_fraction": 0.2},
        }
    )
    return clean_dataset(params.data, params.clean, params.split, out / "clean", out / "clean.json")


def run(shapes: list[tuple[int, int]] = SHAPES, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:  # once untimed: imports, first calls
        make_csv(Path(tmp) / "warm.csv", 20, 20)
        clean(Path(tmp) / "warm.csv", Path(tmp))
    figures = []
    for rows, columns in shapes:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "wide.csv"
            make_csv(path, rows, columns)
            start = time.perf_counter()
            plain = pd.read_csv(path)
            baseline_s = time.perf_counter() - start
            start = time.perf_counter()
            report = clean(path, Path(tmp))
            ours_s = time.perf_counter() - start
            kept = pd.read_parquet(Path(tmp) / "clean" / "table.parquet").shape
            size_mb = round(path.stat().st_size / 1e6, 1)
        assert report["n_kept"] == rows and kept == (rows, plain.shape[1] + 1), "every row and column kept"
        figures.append(
            {
                "rows": rows,
                "columns": columns,
                "mb": size_mb,
                "clean_s": round(ours_s, 3),
                "read_csv_s": round(baseline_s, 3),
                "ratio": round(ours_s / baseline_s, 2),
                "us_per_column": round(ours_s / columns * 1e6),
            }
        )
    widest = max(figures, key=lambda f: (f["columns"], -f["rows"]))
    return {
        "wide_clean_ratio": float(widest["ratio"]),
        "wide_clean_s": float(widest["clean_s"]),
        "wide_clean_shapes": figures,
    }
