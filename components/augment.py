"""augment: add randomly transformed copies of the training split, and (augment.generator: cvae) examples a
conditional VAE fitted on it generates; val/test are never read or touched.

Classical augmentation depends on data.kind (components/kinds/): images get per-sample random affine
transforms (and flips, when enabled), tables optional oversampling of smaller classes and copies with
Gaussian jitter on the scaled numeric features, texts token deletions and swaps. The generator
(components/generative.py) is fitted on the train split only, scored on a held-back slice of it, and its
examples are appended only when they pass that quality gate. Seeded, so reruns are identical on CPU.

The output's `origin` array marks each example: 0 from the train split, 1 a classical copy, 2 generated.
The report (reports/augment.json) counts them per class and holds the gate's scores; the picture
(reports/plots/augmented.png) shows what was added.

    python -m components.augment --split outputs/split --preprocess outputs/preprocess \\
        --out outputs/augmented/train.npz --report reports/augment.json --plot reports/plots/augmented.png
"""

import argparse
import logging
from pathlib import Path

import numpy as np

from components import kinds
from components.errors import run_cli
from components.io import load_arrays, save_arrays, write_json
from components.normalise import load_preprocess
from components.params import Augment, load_params

log = logging.getLogger(__name__)

ORIGINS = ("train", "classical", "generated")  # the meaning of origin 0, 1, 2


def augment_file(
    split_dir: Path,
    preprocess_dir: Path,
    cfg: Augment,
    seed: int,
    out: Path,
    report: Path | None = None,
    plot: Path | None = None,
    checkpoints: Path | None = None,
) -> dict:
    """split_dir/train.npz -> out: "x" model input (originals, classical copies, generated examples), "y" int64,
    "origin" uint8 (ORIGINS), "classes". Writes the report (JSON) and the picture when given; returns the report.
    checkpoints: a folder for the generator's per-epoch checkpoint. Raises UserError as the kind and
    generative.fit_and_generate do."""
    train = load_arrays(split_dir / "train.npz")
    meta, preprocessor = load_preprocess(preprocess_dir)
    kind = kinds.get(meta["kind"])
    classes = [str(c) for c in train["classes"]]
    x, labels = kind.augment(train, preprocessor, cfg, seed)
    origin = np.r_[np.zeros(len(train["y"]), np.uint8), np.ones(len(labels) - len(train["y"]), np.uint8)]
    added, added_y, added_what = x[len(train["y"]) :], labels[len(train["y"]) :], "classical copies"
    summary: dict = {"generator": cfg.generator}
    if cfg.generator == "cvae":
        from components import generative
        from components.model import resolve_device

        space = kind.generator_space(train, preprocessor)
        made = generative.fit_and_generate(
            space.x,
            train["y"],
            len(classes),
            cfg.cvae,
            seed,
            resolve_device(cfg.device, "augment.device"),
            checkpoints,
            balance_to=np.bincount(labels, minlength=len(classes)),  # after the classical copies, oversampling
        )
        generated = space.finish(np.nan_to_num(made.x))  # a diverged fit's NaNs: drawn, never used
        added, added_y = generated, made.y
        added_what = "generated (cVAE)" if made.used else "generated (cVAE), rejected by the quality gate"
        summary["cvae"] = made.report
        if made.used:
            x, labels = np.concatenate([x, generated]), np.concatenate([labels, made.y])
            origin = np.r_[origin, np.full(len(made.y), 2, np.uint8)]
    save_arrays(out, x=x, y=labels, origin=origin, classes=train["classes"])
    summary |= counts(labels, origin, classes)
    log.info(
        "train split: %d examples -> %d after augmentation (%d classical, %d generated)",
        len(train["y"]),
        len(labels),
        summary["counts"]["classical"],
        summary["counts"]["generated"],
    )
    if report:
        write_json(report, summary)
    if plot:
        from components.augment_plots import plot_augmented

        names = preprocessor.feature_names() if hasattr(preprocessor, "feature_names") else None  # tables
        plot_augmented(plot, train["x"], train["y"], added, added_y, classes, added_what, names)
    return summary


def counts(labels: np.ndarray, origin: np.ndarray, classes: list[str]) -> dict:
    """{"counts": {origin name: n}, "per_class": {class: {origin name: n}}} of the augmented training set."""
    table = np.zeros((len(classes), len(ORIGINS)), np.int64)
    np.add.at(table, (labels, origin), 1)
    return {
        "counts": dict(zip(ORIGINS, table.sum(0).tolist(), strict=True)),
        "per_class": {c: dict(zip(ORIGINS, row.tolist(), strict=True)) for c, row in zip(classes, table, strict=True)},
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Add augmented copies and generated examples to the training split.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, required=True, help="normalise's output folder")
    parser.add_argument("--preprocess", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, help="counts per class and origin, the generator's gate (JSON)")
    parser.add_argument("--plot", type=Path, help="a PNG of what was added")
    parser.add_argument("--checkpoints", type=Path, help="a folder for the generator's per-epoch checkpoint")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    augment_file(
        args.split, args.preprocess, params.augment, params.seed, args.out, args.report, args.plot, args.checkpoints
    )


if __name__ == "__main__":
    run_cli(main)
