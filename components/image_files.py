"""Image files decoded as people see them, for training (clean) and prediction alike.

- Transparency (RGBA, LA, a palette or grey/RGB PNG with a transparent colour) is composited on
  `data.background` (default white) before the conversion to grey or RGB, as an image viewer shows
  it; dropping the alpha channel instead turns transparent pixels stored as (0, 0, 0, 0) black.
- 16-bit grey is scaled (0..65535 -> 0..255), not clipped; float grey (TIFF) 0..1 is scaled to 0..255;
  CMYK is converted to RGB; camera photos are turned by their EXIF orientation.
- An image with more than `clean.max_image_pixels` pixels is refused before it is decoded (a 38 KB
  PNG can hold 182 megapixels: gigabytes once decoded).
- Hidden files and folders (any name starting with ".", __MACOSX, Thumbs.db, desktop.ini) are
  skipped and listed, as the file managers that made them hide them.
- Symbolic links that lead outside the data folder are not followed, but listed, unless
  `clean.follow_symlinks: true`; links within it are followed.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
HIDDEN_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", "@eaDir"}  # made by macOS, Windows and NAS indexers


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why in a few words."""


class TooManyPixels(BadImage):
    """An image over the pixel limit, refused before it is decoded."""


def is_hidden(relative: Path) -> bool:
    """Is any part of this path (relative to the data folder) hidden or made by an operating system?"""
    return any(part.startswith(".") or part in HIDDEN_NAMES for part in relative.parts)


def list_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(visible files, hidden files) under root, each sorted, every symbolic link followed (walk_files)."""
    visible, hidden, _, _ = walk_files(root, follow_symlinks=True)
    return visible, hidden


def walk_files(root: Path, follow_symlinks: bool = False) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """(visible files, hidden files, links leading outside root, links to folders read directly) under root,
    each sorted. Symbolic links to files inside root are followed. A link to a folder inside root is listed,
    not followed: the walk reads that folder as itself (`zero -> 0` beside `0/`), and reading it through the
    link too would label the same images as another class, or as none, depending on the order the file system
    lists them. A link that resolves outside root (on a shared machine: anyone's files, /etc, another user's
    data) is not followed but listed, unless follow_symlinks (then a folder reached twice, as through a link
    loop, is read once). A broken link is listed as a file, so that reading it fails and names it."""
    top = os.path.realpath(root)

    def inside(path: Path) -> bool:
        real = os.path.realpath(path)
        return real == top or real.startswith(top.rstrip(os.sep) + os.sep)

    def outside(path: Path) -> bool:
        return not follow_symlinks and os.path.islink(path) and not inside(path)

    visible: list[Path] = []
    hidden: list[Path] = []
    away: list[Path] = []
    aliases: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders.sort()  # the same order on every file system
        for name in list(subfolders):
            path = Path(folder) / name
            if is_hidden(path.relative_to(root)):
                continue
            if outside(path):
                away.append(path)
                subfolders.remove(name)
            elif os.path.islink(path) and inside(path):
                # its target has no link on its way down from root (realpath resolved them all), so the
                # walk reads it as itself
                aliases.append(path)
                subfolders.remove(name)
        for name in files:
            path = Path(folder) / name
            if is_hidden(path.relative_to(root)):
                hidden.append(path)
            else:
                (away if outside(path) else visible).append(path)
    return sorted(visible), sorted(hidden), sorted(away), sorted(aliases)


@contextlib.contextmanager
def pillow_pixel_limit(limit: int | None):
    """Pillow's own decompression-bomb check off (it raises past twice its limit, naming no file):
    decode() applies `limit` itself and reports the file."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode(
    content: bytes,
    channels: int = 1,
    image_size: tuple[int, int] | list[int] | None = None,
    background: str = "white",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Bytes of one image file -> uint8 (height, width, channels) as a viewer shows it, in `channels`
    (1 grey, 3 RGB), resized to image_size [height, width] (bilinear) when given.
    Raises BadImage for a file that is not a readable image or has more than max_pixels pixels."""
    try:
        with pillow_pixel_limit(max_pixels), Image.open(io.BytesIO(content)) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise TooManyPixels(
                    f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than "
                    f"clean.max_image_pixels ({max_pixels})"
                )
            image: Image.Image = ImageOps.exif_transpose(opened)
            image = composited(wide_grey_scaled(image), ImageColor.getrgb(background))
            image = image.convert("L" if channels == 1 else "RGB")
            if image_size is not None:
                target_height, target_width = image_size
                image = image.resize((target_width, target_height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify (another format, or not an image at all)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file; each is one bad file
        raise BadImage(f"not a readable image ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    return array[..., None] if array.ndim == 2 else array


def wide_grey_scaled(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer grey (modes I;16*, I): 0..65535 scaled to 0..255 rather than clipped.
    32-bit float grey (mode F, scientific TIFFs): 0..1 scaled to 0..255, 0..255 kept; other ranges are
    a BadImage, since no scale can be guessed."""
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 1:
            values = values * 255
        elif low < 0 or high > 255:
            raise BadImage(
                f"32-bit float image with values from {low:g} to {high:g}; save it as 8-bit (0..255), "
                "or with values from 0 to 1"
            )
        return Image.fromarray(np.rint(values).astype(np.uint8), mode="L")
    if not image.mode.startswith("I"):
        return image
    wide = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8), mode="L")


def composited(image: Image.Image, background: tuple) -> Image.Image:
    """Transparent pixels over the background colour (alpha blending), as a viewer draws them."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, tuple(background[:3]) + (255,))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")
