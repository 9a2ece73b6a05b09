"""clean: decode every image, drop unreadable files and duplicates, report each drop with its reason.

    python -m components.clean --data data/digits --out outputs/clean.npz --report reports/clean.json
"""

import argparse
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from kfp.dsl import Artifact, Dataset, Input, Output

from components.errors import UserError, run_cli
from components.io import save_arrays, write_json
from components.params import Data, load_params

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class Cleaned:
    images: np.ndarray          # uint8, (n, height, width, channels)
    labels: np.ndarray          # int64 index into classes
    classes: list[str]
    paths: list[str]
    dropped: list[dict] = field(default_factory=list)   # {"path", "reason", "detail"}

    def report(self, n_files: int) -> dict:
        return {
            "n_files": n_files,
            "n_kept": len(self.paths),
            "n_dropped": len(self.dropped),
            "dropped_by_reason": dict(Counter(d["reason"] for d in self.dropped)),
            "kept_per_class": {c: int(n) for c, n in zip(self.classes, np.bincount(self.labels, minlength=len(self.classes)))},
            "dropped": self.dropped,
        }


def decode(content: bytes, data: Data) -> np.ndarray:
    """Bytes of one image file -> uint8 (height, width, channels) in the configured mode and size."""
    with Image.open(io.BytesIO(content)) as image:
        image = image.convert("L" if data.channels == 1 else "RGB")
        if data.image_size is not None:
            height, width = data.image_size
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def clean_images(files: list[tuple[str, str, bytes]], data: Data) -> Cleaned:
    """files: (path, class label, file content), sorted by path. Keeps the first of each duplicate."""
    kept: list[tuple[str, str, np.ndarray]] = []
    dropped: list[dict] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for path, label, content in tqdm(files, desc="clean", unit="img", leave=False):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            dropped.append({"path": path, "reason": "unsupported_file", "detail": "not a PNG/JPEG/BMP file"})
            continue
        try:
            pixels = decode(content, data)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            dropped.append({"path": path, "reason": "unreadable", "detail": str(exc).splitlines()[0]})
            continue
        digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        if digest in first_seen:
            original, original_label = first_seen[digest]
            detail = f"same pixels as {original}"
            if original_label != label:
                detail += f" (labelled {original_label!r} there, {label!r} here)"
            dropped.append({"path": path, "reason": "duplicate", "detail": detail})
            continue
        first_seen[digest] = (path, label)
        kept.append((path, label, pixels))

    if not kept:
        raise UserError(f"{data.path}: no readable images found; expected {data.path}/<class>/<image>.png")
    shapes = Counter(pixels.shape for _, _, pixels in kept)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd_path, _, odd = next(k for k in kept if k[2].shape != common)
        raise UserError(
            f"{odd_path}: image is {odd.shape[0]}x{odd.shape[1]} but most are {common[0]}x{common[1]}; "
            "set data.image_size: [height, width] in params.yaml to resize all images")
    classes = sorted({label for _, label, _ in kept})
    index = {c: i for i, c in enumerate(classes)}
    return Cleaned(
        images=np.stack([pixels for _, _, pixels in kept]),
        labels=np.array([index[label] for _, label, _ in kept], dtype=np.int64),
        classes=classes,
        paths=[path for path, _, _ in kept],
        dropped=dropped,
    )


def read_image_folder(root: Path) -> tuple[list[tuple[str, str, bytes]], list[dict]]:
    """All files under root/<class>/, sorted; files outside a class folder are reported, not read."""
    if not root.is_dir():
        raise UserError(f"{root}: folder not found; set data.path in params.yaml to a folder of class sub-folders")
    files, stray = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            stray.append({"path": str(path), "reason": "not_in_class_folder", "detail": "put it in <class>/"})
            continue
        files.append((str(path), relative.parts[0], path.read_bytes()))
    return files, stray


def clean_folder(root: Path, data: Data, out: Path, report_path: Path) -> dict:
    """Read the image folder, clean it, write the arrays and the report; both engines call this."""
    files, stray = read_image_folder(root)
    cleaned = clean_images(files, data)
    cleaned.dropped[:0] = stray
    report = cleaned.report(n_files=len(files) + len(stray))
    save_arrays(out, images=cleaned.images, labels=cleaned.labels,
                classes=np.array(cleaned.classes), paths=np.array(cleaned.paths))
    write_json(report_path, report)
    log.info("kept %d of %d files; dropped %s", report["n_kept"], report["n_files"], report["dropped_by_reason"] or "none")
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Decode, deduplicate and report an image folder.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, help="overrides data.path")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    data = load_params(args.params).data
    clean_folder(args.data or Path(data.path), data, args.out, args.report)


def clean_step(raw: Input[Dataset], data: dict, clean: Output[Dataset], report: Output[Artifact]):
    """Kubeflow: the same stage on the fetched data; `data` is params.yaml's data section."""
    from pathlib import Path
    from components.clean import clean_folder
    from components.params import Data
    clean_folder(Path(raw.path), Data.model_validate(data), Path(clean.path), Path(report.path))


if __name__ == "__main__":
    run_cli(main)
