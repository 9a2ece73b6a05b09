"""Images are decoded as people see them: transparency over the background, hidden files skipped and
listed, an oversized image one bad file. Every file is made here; the clean CLI runs on it and the raw
folder stays byte-identical."""

import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.image_files import BadImage, decode
from conftest import clean_cli


def folder_hashes(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_clean(tmp_path, capsys, root, data: dict | None = None, clean_cfg: dict | None = None):
    """The clean CLI on an image folder. Returns (exit code, stderr lines, report, images.npz arrays)."""
    before = folder_hashes(root)
    run = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run"))  # a fresh folder per call
    out, report_path = run / "out", run / "clean.json"
    params = {
        "data": {"path": str(root)} | (data or {}),
        "split": {"val_fraction": 0.25, "test_fraction": 0.25},
        "clean": clean_cfg or {},
    }
    code, lines = clean_cli(capsys, params, out, report_path)
    assert folder_hashes(root) == before, "raw data must be byte-identical"
    if code:
        return code, lines, None, None
    with np.load(out / "images.npz") as arrays:
        return code, lines, json.loads(report_path.read_text()), {key: arrays[key] for key in arrays.files}


def icon(index: int) -> Image.Image:
    """A 16x16 RGBA icon as exported with a removed background: transparent pixels stored as (0, 0, 0, 0),
    an opaque black stroke whose position depends on `index`."""
    pixels = np.zeros((16, 16, 4), np.uint8)
    row, col = divmod(index, 4)
    pixels[row * 4 : row * 4 + 3, col * 4 : col * 4 + 3] = (0, 0, 0, 255)
    return Image.fromarray(pixels, "RGBA")


def test_transparent_icons_are_composited_on_white_not_black_duplicates(tmp_path, capsys):
    root = tmp_path / "icons"
    for i in range(16):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        icon(i).save(root / "ab"[i % 2] / f"{i:02d}.png")
    code, _, report, arrays = run_clean(tmp_path, capsys, root)
    assert code == 0 and report["n_kept"] == 16 and report["dropped_by_reason"] == {}, "none is a duplicate"
    first = arrays["images"][list(arrays["ids"]).index(str(root / "a" / "00.png")), ..., 0]
    assert first[0:3, 0:3].tolist() == [[0] * 3] * 3, "the opaque stroke stays black"
    assert (first[4:, :] == 255).all() and (first[:, 4:] == 255).all(), "transparent pixels are the white background"
    # data.background is honoured: on black, the same icon is black all over (what dropping alpha gave)
    assert decode((root / "a" / "00.png").read_bytes(), background="black").max() == 0


@pytest.mark.parametrize("make", ["palette", "la", "gif", "rgb_trns"])
def test_other_kinds_of_transparency(make):
    """A palette PNG with a transparent index, grey + alpha, a GIF, an RGB PNG with a transparent colour."""
    buffer = io.BytesIO()
    solid = np.full((4, 4, 3), 40, np.uint8)
    solid[0, 0] = (200, 10, 10)  # one red pixel, made transparent below
    if make == "palette":
        image = Image.fromarray(solid).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        red_index = image.getpixel((0, 0))
        image.save(buffer, format="PNG", transparency=red_index)
    elif make == "la":
        la = np.stack([np.full((4, 4), 40, np.uint8), np.full((4, 4), 255, np.uint8)], axis=-1)
        la[0, 0] = (0, 0)
        Image.fromarray(la, "LA").save(buffer, format="PNG")
    elif make == "gif":
        image = Image.fromarray(solid).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        image.save(buffer, format="GIF", transparency=image.getpixel((0, 0)))
    else:
        Image.fromarray(solid).save(buffer, format="PNG", transparency=(200, 10, 10))
    grey = decode(buffer.getvalue(), channels=1)
    assert grey[0, 0, 0] == 255 and grey[1, 1, 0] == 40
    rgb = decode(buffer.getvalue(), channels=3, background="#0000ff")
    assert rgb[0, 0].tolist() == [0, 0, 255] and rgb[1, 1].tolist() == [40, 40, 40]


def test_float_tiffs_are_scaled_when_their_range_says_how():
    for values in (np.array([[0.0, 0.5, 1.0]]), np.array([[0.0, 127.5, 255.0]])):  # 0..1 and 0..255
        buffer = io.BytesIO()
        Image.fromarray(values.astype(np.float32), mode="F").save(buffer, format="TIFF")
        assert decode(buffer.getvalue())[0, :, 0].tolist() == [0, 128, 255]
    buffer = io.BytesIO()
    Image.fromarray(np.array([[-3.0, 900.0]], np.float32), mode="F").save(buffer, format="TIFF")
    with pytest.raises(BadImage, match="32-bit float image with values from -3 to 900"):
        decode(buffer.getvalue())


def test_cmyk_and_16_bit_images_keep_working():
    buffer = io.BytesIO()
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(buffer, format="JPEG", quality=100)  # red
    red = decode(buffer.getvalue(), channels=3)[0, 0]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16)).save(buffer, format="PNG")
    assert decode(buffer.getvalue())[0, :, 0].tolist() == [0, 1, 255]


def hidden_clutter(root):
    """What macOS, Windows and editors leave in a folder; none of it is an image of the data set."""
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "._00.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # not a PNG at all
    (root / "b" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / ".ipynb_checkpoints" / "a").mkdir(parents=True)
    icon(3).save(root / ".ipynb_checkpoints" / "a" / "old.png")
    return sorted(
        str(p)
        for p in [
            root / ".DS_Store",
            root / "a" / ".DS_Store",
            root / "__MACOSX" / "a" / "._00.png",
            root / "b" / "Thumbs.db",
            root / ".ipynb_checkpoints" / "a" / "old.png",
        ]
    )


def test_hidden_files_and_folders_are_skipped_and_listed(tmp_path, capsys):
    root = tmp_path / "images"
    for i in range(16):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        icon(i).save(root / "ab"[i % 2] / f"{i:02d}.png")
    hidden = hidden_clutter(root)
    code, _, report, arrays = run_clean(tmp_path, capsys, root, {}, {"on_bad_file": "fail"})
    assert code == 0, "no hidden file is read, so none can fail the stage"
    (root / "a" / "notes.png").write_text("not an image")
    code, _, report_with_text, _ = run_clean(tmp_path, capsys, root)
    [dropped] = report_with_text["dropped"]
    assert dropped["detail"] == "not an image Pillow can identify (another format, or not an image at all)"
    (root / "a" / "notes.png").unlink()
    assert sorted(s["id"] for s in report["skipped"]) == hidden and report["n_skipped"] == 5
    assert {s["reason"] for s in report["skipped"]} == {"hidden"}
    assert report["n_input"] == 16 and report["n_kept"] == 16 and sorted(set(arrays["classes"])) == ["a", "b"]


def test_symbolic_links_are_followed_loops_once_broken_links_named(tmp_path, capsys):
    elsewhere, root = tmp_path / "elsewhere" / "b", tmp_path / "images"
    elsewhere.mkdir(parents=True)
    (root / "a").mkdir(parents=True)
    for i in range(8):
        icon(i).save(root / "a" / f"{i}.png")
        icon(8 + i).save(elsewhere / f"{i}.png")
    (root / "b").symlink_to(elsewhere)  # a class folder kept on another disk
    (root / "a" / "loop").symlink_to(root)  # a link back up: read once, not forever
    (root / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    follow = {"follow_symlinks": True}  # links leading outside the folder are read only if asked
    code, _, report, arrays = run_clean(tmp_path, capsys, root, {}, follow)
    assert code == 0 and report["kept_per_class"] == {"a": 8, "b": 8}
    assert sorted((d["id"], d["reason"]) for d in report["dropped"]) == [
        (str(root / "a" / "gone.png"), "unreadable"),
        (str(root / "a" / "loop"), "link_to_folder_read_directly"),
    ]
    assert (
        next(d["detail"] for d in report["dropped"] if d["reason"] == "unreadable")
        == "cannot be read (No such file or directory)"
    )
    code, lines, _, _ = run_clean(tmp_path, capsys, root, {}, follow | {"on_bad_file": "fail"})
    assert code == 1 and lines[0].startswith(f"error: {root / 'a' / 'gone.png'}: cannot be read")


def test_symbolic_links_leading_outside_the_folder_are_skipped_and_reported(tmp_path, capsys):
    root, secret = tmp_path / "images", tmp_path / "home" / "someone"
    (secret / "keys").mkdir(parents=True)
    for label in "ab":
        (root / label).mkdir(parents=True)
    for i in range(16):
        icon(i).save(root / "ab"[i % 2] / f"{i:02d}.png")
    Image.new("L", (16, 16), 90).save(secret / "private.png")  # unlike any icon, and each other
    Image.new("L", (16, 16), 180).save(secret / "keys" / "k.png")
    (root / "a" / "private.png").symlink_to(secret / "private.png")  # a file outside
    (root / "keys").symlink_to(secret / "keys")  # a class folder outside
    (root / "b" / "etc").symlink_to("/etc")  # a folder outside, by absolute path
    (root / "b" / "same.png").symlink_to(root / "b" / "01.png")  # a link inside: still read
    (root / "b" / "rel.png").symlink_to(Path("..") / "a" / "00.png")  # a relative link inside: still read
    code, _, report, arrays = run_clean(tmp_path, capsys, root)
    assert code == 0, "links are not bad files: they do not fail the stage"
    outside = sorted(str(p) for p in [root / "a" / "private.png", root / "keys", root / "b" / "etc"])
    assert sorted(d["id"] for d in report["dropped"] if d["reason"] == "link_outside_folder") == outside
    assert report["dropped_by_reason"]["link_outside_folder"] == 3
    detail = next(d["detail"] for d in report["dropped"] if d["id"] == str(root / "keys"))
    assert detail.startswith(f"a symbolic link to {secret / 'keys'}, outside {root}") and detail.endswith(
        "set clean.follow_symlinks: true"
    )
    assert not any(str(i).startswith(str(root / "b" / "etc")) for i in arrays["ids"]), "nothing read through /etc"
    assert report["kept_per_class"] == {"a": 8, "b": 8}
    assert sorted(d["id"] for d in report["dropped"] if d["reason"] == "duplicate") == [
        str(root / "b" / "rel.png"),
        str(root / "b" / "same.png"),
    ], "links inside are read (duplicates here)"
    (root / "b" / "etc").unlink()  # not all of /etc, to follow the rest
    code, _, followed, _ = run_clean(tmp_path, capsys, root, {}, {"follow_symlinks": True})
    assert code == 0 and "link_outside_folder" not in followed["dropped_by_reason"]
    assert followed["kept_per_class"] == {"a": 9, "b": 8} and followed["small_classes_dropped"] == {"keys": 1}


def decompression_bomb(path):
    """A 13,500 x 13,500 one-bit PNG: 182 megapixels in a few tens of KB."""
    Image.new("1", (13_500, 13_500)).save(path, optimize=True)


def test_an_oversized_image_is_one_bad_file(tmp_path, capsys):
    root = tmp_path / "images"
    for i in range(16):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        icon(i).save(root / "ab"[i % 2] / f"{i:02d}.png")
    bomb = root / "a" / "huge.png"
    decompression_bomb(bomb)
    assert bomb.stat().st_size < 100_000
    code, _, report, _ = run_clean(tmp_path, capsys, root)
    assert code == 0 and report["n_kept"] == 16
    [dropped] = report["dropped"]
    assert dropped["id"] == str(bomb) and dropped["reason"] == "too_many_pixels"
    assert dropped["detail"] == "image is 13500x13500 = 182 megapixels, more than clean.max_image_pixels (89478485)"
    code, lines, _, _ = run_clean(tmp_path, capsys, root, {}, {"on_bad_file": "fail"})
    assert (
        code == 1
        and lines[0].startswith(f"error: {bomb}: image is 13500x13500")
        and lines[0].endswith("set clean.on_bad_file: drop")
    )
    code, _, report, _ = run_clean(tmp_path, capsys, root, {}, {"max_image_pixels": 256})
    assert code == 0 and report["n_kept"] == 16, "16x16 is not more than 256 pixels"
    code, lines, _, _ = run_clean(tmp_path, capsys, root, {}, {"max_image_pixels": 255})
    assert code == 1 and "no readable images found" in lines[0], "the limit is the setting"


def test_a_link_to_a_class_folder_inside_is_reported_never_a_second_label(tmp_path, capsys):
    root = tmp_path / "images"
    for label in "012":
        (root / label).mkdir(parents=True)
    for i in range(15):  # 15 distinct icons
        icon(i).save(root / "012"[i % 3] / f"{i:02d}.png")
    (root / "zero_alias").symlink_to("0")  # sorts after 0/: would relabel class 0 as zero_alias
    (root / "0" / "inner").symlink_to(Path("..") / "1")  # inside another class: would relabel class 1 as 0
    code, _, report, _ = run_clean(tmp_path, capsys, root)
    assert code == 0 and report["kept_per_class"] == {"0": 5, "1": 5, "2": 5}
    assert sorted(d["id"] for d in report["dropped"] if d["reason"] == "link_to_folder_read_directly") == [
        str(root / "0" / "inner"),
        str(root / "zero_alias"),
    ]
