"""data.kind image_folder: one folder per class (data.path/<label>/*.png), a CNN on per-channel standardised pixels.

clean: decode every image as a viewer shows it (components/image_files.py), skip hidden files, drop unreadable
or oversized files and duplicates (by pixel hash); outputs/clean/images.npz. Preprocessing: per-channel
mean/std of the train pixels (normaliser.json). Augmentation: each copy gets its own random rotation, scale,
translation (zero-padded affine) and, when enabled, horizontal flip, drawn by kornia per sample on a batched
tensor, on the GPU when there is one. Networks: the small CNN or ResNet-18 (components/model.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import UserError, shorten
from components.image_files import IMAGE_SUFFIXES, BadImage, TooManyPixels, decode, list_files, walk_files
from components.io import load_arrays, read_json, save_arrays, write_json
from components.kinds.base import Cleaned, GeneratorSpace
from components.params import Augment, Clean, Data, Params

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
NETWORKS: tuple[str, ...] = ("cnn", "resnet18")
SERVING_SETTINGS: tuple[str, ...] = ("image_size", "channels", "background", "max_image_pixels")
SERVING_PACKAGES: tuple[str, ...] = ()
CHUNK = 8192  # images per augmentation batch: bounds memory on any device, fixed so the draws are too


# ---------------------------------------------------------------- clean


def read_clean(source: Path, data: Data, cfg: Clean) -> Cleaned:
    """The image folder at source, cleaned: features uint8 (n, h, w, channels), ids the file paths."""
    files, stray, skipped = read_image_folder(source, cfg.follow_symlinks, shown_as=Path(data.path))
    unreadable = [s for s in stray if s["reason"] == "unreadable"]
    if unreadable and cfg.on_bad_file == "fail":
        raise UserError(
            f"{unreadable[0]['id']}: {unreadable[0]['detail']}; fix or remove the file, or set clean.on_bad_file: drop"
        )
    cleaned = clean_images(files, data, cfg)
    cleaned.dropped[:0] = stray
    cleaned.skipped = skipped
    cleaned.n_input = len(files) + len(stray)
    # meta.json has always held the table settings too (empty here): kept, so it stays the same bytes
    cleaned.settings = {
        "numeric": [],
        "categorical": [],
        "target": data.target,
        "image_size": data.image_size,
        "channels": data.channels,
        "background": data.background,
        "max_image_pixels": cfg.max_image_pixels,
        "csv": data.csv.model_dump(mode="json"),
    }
    return cleaned


def clean_images(files: list[tuple[str, str, bytes]], data: Data, cfg: Clean = Clean()) -> Cleaned:
    """files: (path, class label, file content), sorted by path. Keeps the first of each duplicate."""
    from tqdm import tqdm

    kept: list[tuple[str, str, np.ndarray]] = []
    dropped: list[dict] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for path, label, content in tqdm(files, desc="clean", unit="img", leave=False, disable=None):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            problem = {
                "id": path,
                "reason": "unsupported_file",
                "detail": f"not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})",
            }
        else:
            try:
                pixels = decode(content, data.channels, data.image_size, data.background, cfg.max_image_pixels)
                problem = None
            except BadImage as exc:
                reason = "too_many_pixels" if isinstance(exc, TooManyPixels) else "unreadable"
                problem = {"id": path, "reason": reason, "detail": str(exc)}
        if problem is not None:
            if cfg.on_bad_file == "fail":
                raise UserError(f"{path}: {problem['detail']}; fix or remove the file, or set clean.on_bad_file: drop")
            dropped.append(problem)
            continue
        digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        if digest in first_seen:
            original, original_label = first_seen[digest]
            detail = f"same pixels as {original}"
            if original_label != label:
                detail += f" (labelled {shorten(original_label)} there, {shorten(label)} here)"
            dropped.append({"id": path, "reason": "duplicate", "detail": detail})
            continue
        first_seen[digest] = (path, label)
        kept.append((path, label, pixels))

    if not kept:
        reasons = ", ".join(f"{n} {reason}" for reason, n in Counter(d["reason"] for d in dropped).items())
        raise UserError(
            f"{data.path}: no readable images found{f' ({reasons})' if reasons else ''}; expected "
            f"{data.path}/<class>/<image>.png"
        )
    shapes = Counter(pixels.shape for _, _, pixels in kept)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd_path, _, odd = next(k for k in kept if k[2].shape != common)
        raise UserError(
            f"{odd_path}: image is {odd.shape[0]}x{odd.shape[1]} but most are {common[0]}x{common[1]}; "
            "set data.image_size: [height, width] in params.yaml to resize all images"
        )
    return Cleaned(
        labels=[label for _, label, _ in kept],
        ids=[path for path, _, _ in kept],
        features=np.stack([pixels for _, _, pixels in kept]),
        dropped=dropped,
    )


def read_image_folder(
    root: Path, follow_symlinks: bool = False, shown_as: Path | None = None
) -> tuple[list[tuple[str, str, bytes]], list[dict], list[dict]]:
    """All visible files under root/<class>/, sorted; files outside a class folder, symbolic links that
    lead outside root (unless follow_symlinks) and links to folders read directly are reported, not read,
    and hidden ones (.DS_Store, __MACOSX/, Thumbs.db, ...) are skipped. Returns (files as (path, class, content),
    strays, skipped), each path named under shown_as (default root): Kubeflow's fetch copies data.path to a
    folder of its own, and ids that name files as data.path does keep the split, and so the registered
    model's data_hash, the same as under DVC."""
    if not root.is_dir():
        raise UserError(f"{root}: folder not found; set data.path in params.yaml to a folder of class sub-folders")
    visible, hidden, away, aliases = walk_files(root, follow_symlinks)

    def shown(path: Path) -> str:
        return str(path if shown_as is None else shown_as / path.relative_to(root))

    files = []
    stray = [
        {
            "id": shown(path),
            "reason": "link_outside_folder",
            "detail": f"a symbolic link to {os.path.realpath(path)}, outside {root}: not read; copy the data in, "
            "or set clean.follow_symlinks: true",
        }
        for path in away
    ]
    stray += [
        {
            "id": shown(path),
            "reason": "link_to_folder_read_directly",
            "detail": f"a symbolic link to {os.path.realpath(path)}, which is read as itself: not read twice "
            "(its images would get two labels); remove the link, or copy the images",
        }
        for path in aliases
    ]
    for path in visible:
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            stray.append({"id": shown(path), "reason": "not_in_class_folder", "detail": "put it in <class>/"})
            continue
        try:
            files.append((shown(path), relative.parts[0], path.read_bytes()))
        except OSError as exc:  # a broken symbolic link, no permission
            stray.append({"id": shown(path), "reason": "unreadable", "detail": f"cannot be read ({exc.strerror})"})
    skipped = [
        {"id": shown(path), "reason": "hidden", "detail": "hidden or made by the operating system"} for path in hidden
    ]
    return files, stray, skipped


def save_clean(folder: Path, cleaned: Cleaned, labels: np.ndarray, classes: list[str]) -> None:
    save_arrays(
        folder / "images.npz", images=cleaned.features, labels=labels, classes=np.array(classes), ids=cleaned.ids
    )


def load_clean(folder: Path) -> dict:
    arrays = load_arrays(folder / "images.npz")
    return {"features": arrays["images"], "labels": arrays["labels"], "ids": arrays["ids"]}


# ---------------------------------------------------------------- preprocessing


@dataclass
class Normaliser:
    """Per-channel standardisation of pixel values, scikit-learn style: fit on train, transform everywhere."""

    mean: list[float] | None = None
    std: list[float] | None = None

    def fit(self, images: np.ndarray) -> Normaliser:
        pixels = images.astype(np.float64) / 255.0  # (n, h, w, c)
        self.mean = pixels.mean(axis=(0, 1, 2)).tolist()
        self.std = np.maximum(pixels.std(axis=(0, 1, 2)), 1e-6).tolist()
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels (n, h, w, c) in 0..255 -> float32 (n, c, h, w), the layout torch convolutions take."""
        if self.mean is None:
            raise RuntimeError("Normaliser.transform called before fit")
        images = np.asarray(images, dtype=np.float32)
        if images.shape[-1] != len(self.mean):
            raise UserError(f"input has {images.shape[-1]} channels, the model expects {len(self.mean)}")
        scaled = (images / np.float32(255.0) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2), dtype=np.float32)

    def to_dict(self) -> dict:
        return {"method": "standard", "pixel_scale": 255.0, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, state: dict) -> Normaliser:
        return cls(mean=list(state["mean"]), std=list(state["std"]))


def fit(train: np.ndarray, meta: dict, params: Params) -> tuple[Normaliser, list[dict]]:
    """train: uint8 pixels (n, h, w, c). Every train image is kept."""
    return Normaliser().fit(train), []


def transform(preprocessor: Normaliser, raw, source: str = "input") -> np.ndarray:
    """Pixels (n, h, w, c), values 0..255 (any numeric dtype) -> float32 (n, c, h, w)."""
    return preprocessor.transform(np.asarray(raw))


def save_preprocessing(folder: Path, preprocessor: Normaliser) -> None:
    write_json(folder / "normaliser.json", preprocessor.to_dict())


def load_preprocessing(folder: Path) -> Normaliser:
    return Normaliser.from_dict(read_json(folder / "normaliser.json"))


# ---------------------------------------------------------------- augmentation


def augment(
    train: dict[str, np.ndarray], preprocessor: Normaliser, cfg: Augment, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Augment the raw pixels (the background stays 0 where the affine pads), then apply the train-fitted
    scaling."""
    from components.model import resolve_device

    raw, labels = augment_images(train["raw"], train["y"], cfg, seed, resolve_device(cfg.device, "augment.device"))
    return preprocessor.transform(raw), labels


def generator_space(train: dict[str, np.ndarray], preprocessor: Normaliser) -> GeneratorSpace:
    """The raw pixels as (n, c, h, w) in [0, 1]; generated ones are rounded to uint8 and scaled like the rest."""

    def finish(generated: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.rint(generated * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return preprocessor.transform(pixels)

    return GeneratorSpace(train["raw"].transpose(0, 3, 1, 2).astype(np.float32) / 255, finish)


def augmenter(cfg: Augment) -> torch.nn.Module:
    import kornia.augmentation as K

    steps: list[K.AugmentationBase2D] = [
        K.RandomAffine(
            degrees=cfg.rotation_degrees,
            translate=(cfg.translate, cfg.translate),
            scale=(cfg.scale[0], cfg.scale[1]),
            padding_mode="zeros",
            p=1.0,
            same_on_batch=False,
        )
    ]
    if cfg.hflip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    return K.AugmentationSequential(*steps)


def augment_images(
    raw: np.ndarray, labels: np.ndarray, cfg: Augment, seed: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 (n, h, w, c) -> originals followed by `cfg.copies` augmented copies, as uint8 again.
    The images travel to `device` as uint8 (4x less to copy than floats) in fixed-size chunks, so the
    random parameters do not depend on the device: kornia draws them on the CPU generator (a GPU's warp
    arithmetic may still round a few pixels differently from the CPU's)."""
    import torch

    if cfg.copies == 0:
        return raw, labels
    pipeline = augmenter(cfg)  # stays on the CPU: its generator draws there, kornia moves the draws
    images = torch.from_numpy(raw).permute(0, 3, 1, 2)
    if device != "cpu":
        images = images.pin_memory()
    copies = []
    with torch.random.fork_rng(devices=[]):  # seeded locally, leaves the caller's RNG alone
        torch.manual_seed(seed)
        for _ in range(cfg.copies):
            for chunk in images.split(CHUNK):
                batch = chunk.to(device, non_blocking=True).float().div_(255.0)
                copies.append(pipeline(batch).clamp_(0, 1).mul_(255).round_().to(torch.uint8).cpu())
    augmented = torch.cat(copies).permute(0, 2, 3, 1).numpy()
    return np.concatenate([raw, augmented]), np.concatenate([labels] * (cfg.copies + 1))


# ---------------------------------------------------------------- network


def is_model_input(x: np.ndarray) -> bool:
    """Images reach the network as (n, channels, height, width)."""
    return x.ndim == 4


def network_config(x_shape: tuple[int, ...], classes: list[str], params: Params) -> dict:
    """train.arch (cnn | resnet18) for x_shape (n, c, h, w); the CNN's first block has train.width channels."""
    cfg = params.train
    return {"arch": cfg.arch, "in_channels": int(x_shape[1]), "width": cfg.width, "classes": classes}


def example_lengths(x: np.ndarray, config: dict) -> np.ndarray | None:
    """None: every image has the same size."""
    return None


def build_network(config: dict, params: Params | None = None) -> torch.nn.Module:
    from components.model import SmallCNN, resnet18

    if config["arch"] == "resnet18":
        return resnet18(config["in_channels"], len(config["classes"]))
    return SmallCNN(config["in_channels"], len(config["classes"]), config["width"])


def signature_input(raw: np.ndarray) -> np.ndarray:
    """The pixels themselves: a tensor signature (-1, h, w, c)."""
    return raw


# ---------------------------------------------------------------- batch prediction


def read_input(
    source: Path, meta: dict, preprocessor: Normaliser, overrides: dict[str, str]
) -> tuple[list[str], np.ndarray]:
    """Every visible image file under source (any depth): (paths, float32 pixels (n, h, w, c) 0..255).
    overrides (CSV reading options) do not apply to images."""
    return read_images(source, meta)


def request_input(inputs: list | dict[str, np.ndarray]) -> np.ndarray:
    """Pixels from a request (v1 `instances`: one (h, w, c) nested list per image; v2: one tensor (n, h, w, c),
    UINT8 or FP32) -> float32 (n, h, w, c), values 0..255 as in training. Raises UserError."""
    field: str = "instances"
    given: Any = inputs
    if isinstance(inputs, dict):
        if len(inputs) != 1:
            raise UserError(f"inputs: give one tensor of pixels (n, height, width, channels), not {len(inputs)}")
        ((name, given),) = inputs.items()
        field = f"inputs[{name!r}]"
    try:
        given = np.asarray(given)
    except ValueError:  # ragged nesting
        given = np.asarray([], dtype=object)
    if given.dtype.kind not in "iuf":  # strings, booleans, objects, ragged lists
        raise UserError(f"{field}: expected numbers, images of one size as nested lists (n, height, width, channels)")
    pixels = given.astype(np.float32)
    if pixels.ndim != 4 or not pixels.size:
        raise UserError(f"{field}: expected pixels of shape (n, height, width, channels), got shape {pixels.shape}")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise UserError(
            f"{field}: pixel values must be 0..255 (got {given.min()} .. {given.max()}); scale them as the "
            "training images were (8-bit)"
        )
    return pixels


def read_images(root: Path, meta: dict) -> tuple[list[str], np.ndarray]:
    """Every visible image file under root (any depth), decoded as the model's training images were
    (the same background and pixel limit); a bad file, or one of another size, is an error naming it."""
    from components.params import MAX_IMAGE_PIXELS  # models registered before the limit travelled with them

    if not root.is_dir():
        raise UserError(f"{root}: not a folder; this model takes a folder of images (check --input)")
    visible, hidden = list_files(root)
    paths = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
    if hidden:
        log.info("skipped %d hidden files (e.g. %s)", len(hidden), hidden[0])
    if not paths:
        raise UserError(f"{root}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for path in paths:
        try:
            images.append(
                decode(
                    path.read_bytes(),
                    meta.get("channels", 1),
                    meta.get("image_size"),
                    meta.get("background") or "white",
                    meta.get("max_image_pixels", MAX_IMAGE_PIXELS),
                )
            )
        except BadImage as exc:
            raise UserError(f"{path}: {exc}; fix or remove it") from None
        except OSError as exc:  # a broken symbolic link, no permission
            raise UserError(f"{path}: cannot be read ({exc.strerror}); fix or remove it") from None
        if images[-1].shape != images[0].shape:
            height, width = images[0].shape[:2]
            raise UserError(
                f"{path}: image is {images[-1].shape[0]}x{images[-1].shape[1]}, but {paths[0]} is "
                f"{height}x{width} and the model was trained without data.image_size; resize them to "
                "the training images' size"
            )
    return [str(p) for p in paths], np.stack(images).astype(np.float32)
