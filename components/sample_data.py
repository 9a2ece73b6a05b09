"""How the shipped sample data was made.

- data/digits/: scikit-learn's handwritten digits (1,797 8x8 grey images) as class folders of PNGs;
- data/penguins/penguins.csv: the Palmer penguins table from the palmerpenguins package, as
  published (344 rows, missing values, categorical island/sex, 3 species).

Both are tracked by DVC (data.dvc) and stored in the in-repo DVC remote `.dvc/sample-remote`, so
`dvc pull` restores byte-identical files; this module shows the provenance and lets tests build
small real data sets.

    python -m components.sample_data data/digits
    python -m components.sample_data --penguins data/penguins/penguins.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def digit_images(limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as uint8 images (0..16 ink levels scaled to 0..255) and their labels."""
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target
    if limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in np.unique(labels)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    return images, labels


def export_digits(dest: str | Path, limit_per_class: int | None = None) -> int:
    """Write data/<label>/<index>.png; returns the number of files written."""
    dest = Path(dest)
    images, labels = digit_images(limit_per_class)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = dest / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png")
    return len(images)


def export_penguins(dest: str | Path) -> int:
    """Copy the palmerpenguins CSV (missing values included) to dest; returns the number of rows."""
    from importlib.resources import files

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    content = files("palmerpenguins").joinpath("data", "penguins.csv").read_bytes()
    dest.write_bytes(content)
    return content.count(b"\n") - 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--penguins", action="store_true", help="write the penguins CSV to dest instead")
    args = parser.parse_args(argv)
    if args.penguins:
        print(f"wrote {export_penguins(args.dest)} rows to {args.dest}")
    else:
        print(f"wrote {export_digits(args.dest, args.limit_per_class)} images under {args.dest}")


if __name__ == "__main__":
    main()
