"""Benchmark #4 (clean + normalise of a big table against a plain pandas script) on a small table: the
figures are all there, and the baseline really does the same work as our two stages."""

import json

import numpy as np
import pytest

from benchmarks.table import run

KEYS = {
    "clean_normalise_s",
    "clean_normalise_baseline_s",
    "clean_normalise_ratio",
    "clean_normalise_peak_rss_gb",
    "clean_normalise_baseline_peak_rss_gb",
    "table_gb",
    "clean_normalise_peak_rss_ratio",
    "table_rows",
    "table_cols",
}


def test_table_benchmark_figures_and_the_baseline_does_the_same_work(tmp_path):
    result = run(rows=20_000, cols=5, workdir=tmp_path)
    assert set(result) == KEYS
    assert all(result[key] > 0 for key in KEYS), result
    assert (result["table_rows"], result["table_cols"], result["table_gb"]) == (20_000, 5, 20_000 * 5 * 8 / 1e9)
    assert result["clean_normalise_ratio"] == pytest.approx(
        result["clean_normalise_baseline_s"] / result["clean_normalise_s"], abs=0.01
    )
    assert result["clean_normalise_peak_rss_ratio"] == pytest.approx(
        result["clean_normalise_peak_rss_gb"] / result["table_gb"], rel=0.01
    )

    report = json.loads((tmp_path / "ours" / "clean.json").read_text())
    assert report["dropped_by_reason"]["missing_target"] > 0 and report["dropped_by_reason"]["duplicate"] > 0, (
        "the synthetic table must exercise both drops"
    )
    sizes = []
    for name in ("train", "val", "test"):
        with (
            np.load(tmp_path / "ours" / "split" / f"{name}.npz") as ours,
            np.load(tmp_path / "baseline" / f"{name}.npz") as plain,
        ):
            assert len(plain["y"]) == len(ours["y"]) > 0
            # the same rows of the file in each split, with the same labels and values after scaling
            order = np.argsort(plain["ids"])
            np.testing.assert_array_equal(plain["ids"][order], ours["ids"].astype(int))
            np.testing.assert_array_equal(plain["classes"], ours["classes"])
            np.testing.assert_array_equal(plain["y"][order], ours["y"])
            np.testing.assert_allclose(plain["x"][order], ours["x"], atol=1e-5)
            assert ours["x"].dtype == plain["x"].dtype == np.float32 and ours["x"].shape[1] == 5
            sizes.append(len(ours["y"]))
    assert sum(sizes) == report["n_kept"] < 20_000
