"""augment: add randomly transformed copies of the training split; val/test are never touched.

Images: each copy gets its own random rotation, scale, translation (zero-padded affine) and, when
enabled, horizontal flip, drawn by kornia per sample on a batched tensor, on the GPU when there is one.
Tables: optional oversampling of smaller classes, and copies with Gaussian jitter on the scaled
numeric features. Both seeded, so reruns are identical.

    python -m components.augment --split outputs/split --preprocess outputs/preprocess --out outputs/augmented/train.npz
"""

import argparse
import logging
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch

from components.errors import run_cli
from components.io import load_arrays, save_arrays
from components.model import resolve_device
from components.normalise import load_preprocess
from components.params import Augment, load_params

log = logging.getLogger(__name__)
CHUNK = 8192        # images per augmentation batch: bounds memory on any device, fixed so the draws are too


def augmenter(cfg: Augment) -> torch.nn.Module:
    steps = [K.RandomAffine(degrees=cfg.rotation_degrees, translate=(cfg.translate, cfg.translate),
                            scale=tuple(cfg.scale), padding_mode="zeros", p=1.0, same_on_batch=False)]
    if cfg.hflip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    return K.AugmentationSequential(*steps)


def augment_images(raw: np.ndarray, labels: np.ndarray, cfg: Augment, seed: int,
                   device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 (n, h, w, c) -> originals followed by `cfg.copies` augmented copies, as uint8 again.
    The images travel to `device` as uint8 (4x less to copy than floats) in fixed-size chunks, so the
    random parameters do not depend on the device: kornia draws them on the CPU generator (a GPU's warp
    arithmetic may still round a few pixels differently from the CPU's)."""
    if cfg.copies == 0:
        return raw, labels
    pipeline = augmenter(cfg)                      # stays on the CPU: its generator draws there, kornia moves the draws
    images = torch.from_numpy(raw).permute(0, 3, 1, 2)
    if device != "cpu":
        images = images.pin_memory()
    copies = []
    with torch.random.fork_rng(devices=[]):        # seeded locally, leaves the caller's RNG alone
        torch.manual_seed(seed)
        for _ in range(cfg.copies):
            for chunk in images.split(CHUNK):
                batch = chunk.to(device, non_blocking=True).float().div_(255.0)
                copies.append(pipeline(batch).clamp_(0, 1).mul_(255).round_().to(torch.uint8).cpu())
    augmented = torch.cat(copies).permute(0, 2, 3, 1).numpy()
    return np.concatenate([raw, augmented]), np.concatenate([labels] * (cfg.copies + 1))


def augment_table(x: np.ndarray, labels: np.ndarray, numeric: np.ndarray, cfg: Augment,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scaled features (n, d) -> optionally class-balanced rows, then `copies` jittered copies of them."""
    rng = np.random.default_rng(seed)
    if cfg.oversample:
        counts = np.bincount(labels)
        extra = [rng.choice(np.flatnonzero(labels == c), counts.max() - n, replace=True)
                 for c, n in enumerate(counts) if 0 < n < counts.max()]
        if extra:
            index = np.concatenate([np.arange(len(labels)), *extra])
            x, labels = x[index], labels[index]
    if cfg.jitter == 0 or cfg.copies == 0:
        return x, labels
    copies = np.repeat(x[None], cfg.copies, axis=0)
    copies[..., numeric] += rng.normal(0, cfg.jitter, size=copies[..., numeric].shape).astype(np.float32)
    return np.concatenate([x, *copies]), np.concatenate([labels] * (cfg.copies + 1))


def augment_file(split_dir: Path, preprocess_dir: Path, cfg: Augment, seed: int, out: Path) -> None:
    """split_dir/train.npz -> originals plus augmented copies, preprocessed like every split."""
    train = load_arrays(split_dir / "train.npz")
    meta, preprocessor = load_preprocess(preprocess_dir)
    if meta["kind"] == "image_folder":
        raw, labels = augment_images(train["raw"], train["y"], cfg, seed, resolve_device(cfg.device, "augment.device"))
        # Augment raw pixels (background stays 0 where the affine pads), then apply the train-fitted scaling.
        x = preprocessor.transform(raw)
    else:
        x, labels = augment_table(train["x"], train["y"], preprocessor.numeric_mask(), cfg, seed)
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
