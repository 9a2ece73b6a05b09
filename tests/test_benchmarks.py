"""`python -m benchmarks --quick` runs end to end and writes every figure BENCHMARKS.md reports.
Values are only checked for sense here (tests do not time things); the figures come from a full run."""

import json
import subprocess
import sys

import numpy as np

from benchmarks.augment import CFG, per_sample_torchvision
from components.kinds.images import augment_images
from conftest import REPO

KEYS = {
    "train_throughput_ratio",
    "augment_speedup",
    "clean_normalise_ratio",
    "clean_normalise_peak_rss_ratio",
    "csv_read_cost_ratio",
    "wide_clean_ratio",
    "repro_noop_s",
    "pipeline_fresh_s",
    "text_train_throughput_ratio",
    "text_train_component_tokens_per_s",
    "text_padding_speedup_random",
    "text_padding_speedup_bucketed",
    "predict_cold_start_s",
    "predict_cold_start_baseline_s",
    "predict_cold_start_ratio",
    "predict_peak_rss_gb",
    "predict_baseline_peak_rss_gb",
    "predict_peak_rss_ratio",
    "tune_trials_per_hour_p1",
    "tune_trials_per_hour_p2",
    "tune_overhead_fraction",
    "device",
    "gpu_busy_fraction",
    "machine",
}


def test_quick_benchmarks_write_every_figure(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures.keys() >= KEYS
    assert figures["device"] == "cpu" and figures["gpu_busy_fraction"] is None
    for key in KEYS - {"device", "gpu_busy_fraction", "machine"}:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["pipeline_fresh_s"] > figures["repro_noop_s"]
    assert figures["predict_images"] == 8  # both sides gave the same predictions, or the run failed
    tokens = figures["text_train_computed_tokens"]  # the bare loop trains on batches of the same shapes
    assert tokens["component"] == tokens["bare"] >= figures["text_train_real_tokens"]
    assert figures["tune_mlflow_child_runs"] == figures["tune_searches"]["penguins_p1"]["trials"]  # one (quick)
    assert figures["machine"]["cpu_cores"] >= 1
    assert "train_throughput_ratio" in result.stdout and str(out) in result.stdout


def test_the_augmentation_baseline_does_the_same_kind_of_work():
    """Both sides keep shape and dtype and really move pixels, so the speed-up compares like with like."""
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    theirs = per_sample_torchvision(images, CFG)
    ours, _ = augment_images(images, np.zeros(64, np.int64), CFG, seed=0)
    ours = ours[64:]  # the augmented copies
    assert theirs.shape == ours.shape == images.shape and theirs.dtype == ours.dtype == np.uint8
    for out in (theirs, ours):
        changed = (out != images).reshape(64, -1).mean(axis=1)
        assert (changed > 0.3).mean() > 0.9, "nearly every image is transformed"
