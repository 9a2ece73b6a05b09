"""Augmentation: the augment component's batched kornia transforms on the training device against
torchvision v2 transforms applied one image at a time on the CPU (a classic Dataset.__getitem__),
same transforms (rotation, scale, translation, horizontal flip), same 32x32x3 uint8 images."""

from __future__ import annotations

import time

import numpy as np
import torch
from torchvision.transforms import v2

from components.kinds.images import augment_images
from components.params import Augment

CFG = Augment(copies=1, rotation_degrees=12, scale=(0.9, 1.1), translate=0.1, hflip=True)


def per_sample_torchvision(images: np.ndarray, cfg: Augment) -> np.ndarray:
    transform = v2.Compose(
        [
            v2.RandomAffine(degrees=cfg.rotation_degrees, translate=(cfg.translate, cfg.translate), scale=cfg.scale),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    )
    chw = torch.from_numpy(images).permute(0, 3, 1, 2)
    return torch.stack([transform(image) for image in chw]).permute(0, 2, 3, 1).numpy()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(device: str, quick: bool = False) -> dict:
    n = 2048 if quick else 32768
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(n, np.int64)
    batched = lambda: augment_images(images, labels, CFG, seed=0, device=device)  # noqa: E731
    batched()  # warm-up (CUDA context, kernels)
    ours = min(timed(batched) for _ in range(2))
    baseline = timed(per_sample_torchvision, images, CFG)
    return {
        "augment_images": f"{n} x 32x32x3 uint8",
        "augment_device": device,
        "augment_images_per_s": round(n / ours, 1),
        "augment_torchvision_per_sample_cpu_images_per_s": round(n / baseline, 1),
        "augment_speedup": round(baseline / ours, 2),
    }
