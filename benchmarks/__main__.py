"""Run every benchmark, print the table, write benchmarks/results.json.

    python -m benchmarks                  # full sizes (about 16 minutes on 2 CPU cores)
    python -m benchmarks --quick          # small sizes: checks that everything runs, figures mean little
    python -m benchmarks --only train augment

Each speed figure is a ratio against a plain baseline measured in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks import (
    augment,
    csv_read,
    generative,
    pipeline,
    predict_cold_start,
    serve,
    table,
    text_train,
    train,
    tune,
    wide_table,
)

OUT = Path(__file__).with_name("results.json")
STEPS = ["train", "augment", "table", "csv", "wide", "pipeline", "text", "predict", "serve", "tune", "generative"]
GOALS = {
    "train_throughput_ratio": ">= 0.97",
    "gpu_busy_fraction": ">= 0.90",
    "augment_speedup": ">= 20 (GPU), >= 2 (CPU)",
    "clean_normalise_ratio": ">= 1.0",
    "clean_normalise_peak_rss_ratio": "<= 3.0",
    "csv_read_cost_ratio": "reported: the cost of reading as written",
    "wide_clean_ratio": "reported; linear in columns (us_per_column about constant)",
    "text_train_throughput_ratio": ">= 0.95 (CPU)",
    "text_padding_speedup_random": "reported (fixed / dynamic padding)",
    "text_padding_speedup_bucketed": "reported (fixed / dynamic padding)",
    "predict_cold_start_s": "<= 5 (2 CPU cores)",
    "predict_cold_start_ratio": "reported (pyfunc baseline / ours)",
    "predict_peak_rss_ratio": "reported (pyfunc baseline / ours)",
    "serve_image_batch64_ratio": ">= 0.8 (server / in-process examples per second)",
    "serve_table_batch64_ratio": ">= 0.8",
    "serve_text_batch64_ratio": ">= 0.8",
    "tune_overhead_fraction": "< 0.05 (time outside the train component, per trial)",
    "tune_best_val_macro_f1": ">= tune_default_val_macro_f1",
    **{
        f"generative_{setting}_{variant}_f1_mean": "reported (test macro-F1, 5 seeds)"
        for setting in generative.SETTINGS
        for variant in generative.VARIANTS
    },
    "generative_cost_cvae_s": "< 60 (2 CPU cores)",
    "generative_cost_ratio": "reported (generator cvae / none, same run)",
}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor()
    )
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STEPS,
        default=STEPS,
        help="run these only; the other figures already in --out are kept",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")

    results: dict = {}
    if set(args.only) != set(STEPS) and args.out.exists():
        results = json.loads(args.out.read_text())  # --only: rerun some, keep the other figures
    results.update(
        {
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "quick": args.quick,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    console = Console(stderr=True)
    steps = {
        "train": lambda: train.run(device, quick=args.quick),
        "augment": lambda: augment.run(device, quick=args.quick),
        "table": lambda: table.run(rows=200_000 if args.quick else 10_000_000, cols=20),
        "csv": lambda: csv_read.run(rows=20_000 if args.quick else 1_000_000),
        "wide": lambda: wide_table.run(wide_table.QUICK_SHAPES if args.quick else wide_table.SHAPES),
        "pipeline": lambda: pipeline.run(quick=args.quick),
        "text": lambda: text_train.run(device, quick=args.quick),
        "predict": lambda: predict_cold_start.run(repeats=1 if args.quick else 3),
        "serve": lambda: serve.run(quick=args.quick),
        "tune": lambda: tune.run(quick=args.quick),
        "generative": lambda: generative.run(quick=args.quick),
    }
    for name in args.only:
        with console.status(f"benchmark: {name}"):
            results.update(steps[name]())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    view = Table(title=f"benchmarks on {results['device']} ({results['machine']['cpu_cores']} CPU cores)")
    for column in ("figure", "value", "goal"):
        view.add_column(column)
    for key, value in results.items():
        if key not in ("machine", "quick", "date"):
            view.add_row(key, str(value), GOALS.get(key, ""))
    Console().print(view)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
