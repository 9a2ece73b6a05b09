"""normalise: stratified train/val/test split, then scaling fitted on train only and applied to all.

The fitted statistics (outputs/normaliser.json) travel with the registered model, so the served
model takes raw pixels.

    python -m components.normalise --clean outputs/clean.npz --out outputs/split --normaliser outputs/normaliser.json
"""

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from kfp.dsl import Artifact, Dataset, Input, Output

from components.errors import UserError, run_cli
from components.io import load_arrays, read_json, save_arrays, write_json
from components.params import Split, load_params

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class Normaliser:
    """Per-channel standardisation of pixel values, scikit-learn style: fit on train, transform everywhere."""
    mean: list[float] | None = None
    std: list[float] | None = None

    def fit(self, images: np.ndarray) -> "Normaliser":
        pixels = images.astype(np.float64) / 255.0           # (n, h, w, c)
        self.mean = pixels.mean(axis=(0, 1, 2)).tolist()
        self.std = np.maximum(pixels.std(axis=(0, 1, 2)), 1e-6).tolist()
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels (n, h, w, c) in 0..255 -> float32 (n, c, h, w), the layout torch convolutions take."""
        if self.mean is None:
            raise RuntimeError("Normaliser.transform called before fit")
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:                                   # grey images given without a channel axis
            images = images[..., None]
        if images.shape[-1] != len(self.mean):
            raise UserError(f"input has {images.shape[-1]} channels, the model expects {len(self.mean)}")
        scaled = (images / np.float32(255.0) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2), dtype=np.float32)

    def to_dict(self) -> dict:
        return {"method": "standard", "pixel_scale": 255.0, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, state: dict) -> "Normaliser":
        return cls(mean=list(state["mean"]), std=list(state["std"]))

    @classmethod
    def load(cls, path: str | Path) -> "Normaliser":
        return cls.from_dict(read_json(path))


def stratified_split(labels: np.ndarray, classes: list[str], split: Split, seed: int) -> dict[str, np.ndarray]:
    """Indices of each split, stratified by class and fixed by the seed."""
    counts = Counter(labels.tolist())
    needed = max(3, int(np.ceil(1 / min(split.val_fraction, split.test_fraction))))
    small = [f"{classes[c]!r} ({n})" for c, n in sorted(counts.items()) if n < needed]
    if small:
        raise UserError(f"class {', '.join(small)} has too few images for a stratified {split.val_fraction}/"
                        f"{split.test_fraction} val/test split (need {needed}); add images or drop the class folder")
    if len(counts) < 2:
        raise UserError(f"only one class ({classes[0]!r}) found; a classifier needs at least two class folders")
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=split.test_fraction, stratify=labels, random_state=seed)
    val_share = split.val_fraction / (1 - split.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_and_normalise(images: np.ndarray, labels: np.ndarray, classes: list[str], split: Split,
                        seed: int) -> tuple[dict[str, dict[str, np.ndarray]], Normaliser]:
    """Split, fit the normaliser on the train split only, and transform every split."""
    indices = stratified_split(labels, classes, split, seed)
    normaliser = Normaliser().fit(images[indices["train"]])
    parts = {
        name: {"index": idx, "raw": images[idx], "x": normaliser.transform(images[idx]), "y": labels[idx]}
        for name, idx in indices.items()
    }
    return parts, normaliser


def normalise_files(clean_path: Path, split: Split, seed: int, out_dir: Path, normaliser_path: Path) -> None:
    """clean.npz -> out_dir/{train,val,test}.npz and the fitted normaliser; both engines call this."""
    clean = load_arrays(clean_path)
    classes = clean["classes"].tolist()
    parts, normaliser = split_and_normalise(clean["images"], clean["labels"], classes, split, seed)
    for name, part in parts.items():
        save_arrays(out_dir / f"{name}.npz", classes=clean["classes"], paths=clean["paths"][part.pop("index")], **part)
    write_json(normaliser_path, normaliser.to_dict())
    log.info("split %s; train mean %s std %s", {k: len(v["y"]) for k, v in parts.items()},
             np.round(normaliser.mean, 4).tolist(), np.round(normaliser.std, 4).tolist())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Split stratified and normalise (fitted on train only).")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--clean", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for train/val/test .npz")
    parser.add_argument("--normaliser", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    normalise_files(args.clean, params.split, params.seed, args.out, args.normaliser)


def normalise_step(clean: Input[Dataset], seed: int, split: dict, splits: Output[Dataset],
                   normaliser: Output[Artifact]):
    """Kubeflow: `splits` is a folder holding train.npz, val.npz and test.npz."""
    from pathlib import Path
    from components.normalise import normalise_files
    from components.params import Split
    normalise_files(Path(clean.path), Split.model_validate(split), seed, Path(splits.path), Path(normaliser.path))


if __name__ == "__main__":
    run_cli(main)
