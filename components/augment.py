"""augment: add randomly transformed copies of the training split; val/test are never touched.

How depends on data.kind (components/kinds/): images get per-sample random affine transforms (and flips,
when enabled), tables optional oversampling of smaller classes and copies with Gaussian jitter on the
scaled numeric features. Seeded, so reruns are identical.

    python -m components.augment --split outputs/split --preprocess outputs/preprocess --out outputs/augmented/train.npz
"""

import argparse
import logging
from pathlib import Path

from components import kinds
from components.errors import run_cli
from components.io import load_arrays, save_arrays
from components.normalise import load_preprocess
from components.params import Augment, load_params

log = logging.getLogger(__name__)


def augment_file(split_dir: Path, preprocess_dir: Path, cfg: Augment, seed: int, out: Path) -> None:
    """split_dir/train.npz -> originals plus augmented copies, preprocessed like every split."""
    train = load_arrays(split_dir / "train.npz")
    meta, preprocessor = load_preprocess(preprocess_dir)
    x, labels = kinds.get(meta["kind"]).augment(train, preprocessor, cfg, seed)
    save_arrays(out, x=x, y=labels, classes=train["classes"])
    log.info("train split: %d examples -> %d after augmentation", len(train["y"]), len(labels))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Add augmented copies of the training split.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, required=True, help="normalise's output folder")
    parser.add_argument("--preprocess", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    augment_file(args.split, args.preprocess, params.augment, params.seed, args.out)


if __name__ == "__main__":
    run_cli(main)
