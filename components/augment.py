"""augment: add randomly transformed copies of the training images; val/test are never touched.

Each image gets its own random rotation, scale, translation (a shifted crop) and, when enabled,
horizontal flip, drawn by kornia per sample on a batched tensor, seeded so reruns are identical.

    python -m components.augment --train outputs/split/train.npz --normaliser outputs/normaliser.json \
        --out outputs/augmented/train.npz
"""

import argparse
import logging
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch

from kfp.dsl import Artifact, Dataset, Input, Output

from components.errors import run_cli
from components.io import load_arrays, save_arrays
from components.normalise import Normaliser
from components.params import Augment, load_params

log = logging.getLogger(__name__)


def augmenter(cfg: Augment) -> torch.nn.Module:
    steps = [K.RandomAffine(degrees=cfg.rotation_degrees, translate=(cfg.translate, cfg.translate),
                            scale=tuple(cfg.scale), padding_mode="zeros", p=1.0, same_on_batch=False)]
    if cfg.hflip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    return K.AugmentationSequential(*steps)


def augment_images(raw: np.ndarray, labels: np.ndarray, cfg: Augment, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 (n, h, w, c) -> originals followed by `cfg.copies` augmented copies, as uint8 again."""
    if cfg.copies == 0:
        return raw, labels
    pipeline = augmenter(cfg)
    batch = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0
    copies = []
    with torch.random.fork_rng(devices=[]):        # seeded locally, leaves the caller's RNG alone
        torch.manual_seed(seed)
        for _ in range(cfg.copies):
            copies.append(pipeline(batch))
    augmented = torch.cat(copies).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.concatenate([raw, augmented]), np.concatenate([labels] * (cfg.copies + 1))


def augment_file(train_path: Path, normaliser_path: Path, cfg: Augment, seed: int, out: Path) -> None:
    """train.npz -> originals plus augmented copies, normalised with the train statistics."""
    train = load_arrays(train_path)
    raw, labels = augment_images(train["raw"], train["y"], cfg, seed)
    # Augment raw pixels (background stays 0 where the affine pads), then apply the train-fitted scaling.
    x = Normaliser.load(normaliser_path).transform(raw)
    save_arrays(out, x=x, y=labels, classes=train["classes"])
    log.info("train split: %d images -> %d with %d augmented copies each", len(train["y"]), len(labels), cfg.copies)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Add augmented copies of the training split.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--normaliser", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    augment_file(args.train, args.normaliser, params.augment, params.seed, args.out)


def augment_step(splits: Input[Dataset], normaliser: Input[Artifact], seed: int, augment: dict,
                 augmented: Output[Dataset]):
    """Kubeflow: augments splits/train.npz only."""
    from pathlib import Path
    from components.augment import augment_file
    from components.params import Augment
    augment_file(Path(splits.path) / "train.npz", Path(normaliser.path), Augment.model_validate(augment), seed,
                 Path(augmented.path))


if __name__ == "__main__":
    run_cli(main)
