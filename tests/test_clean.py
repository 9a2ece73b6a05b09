"""clean: every file decoded, duplicates and unreadable files dropped and reported; raw data untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components.errors import UserError
from components.kinds.images import clean_images, read_image_folder
from components.params import Clean, Data


def folder_hashes(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dirty_folder(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(4):  # 4 per class: enough for a 0.3/0.3 val/test split
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / label / f"{i}.png")
    # same pixels saved as BMP under another name and class: a duplicate with a conflicting label
    Image.open(root / "cat" / "0.png").save(root / "dog" / "copy.bmp")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes((root / "cat" / "1.png").read_bytes())
    return root


def test_clean_reports_each_dropped_file_with_its_reason(dirty_folder, tmp_path):
    before = folder_hashes(dirty_folder)
    out, report_path = tmp_path / "clean", tmp_path / "clean.json"
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{path: {dirty_folder}}}\nsplit: {{val_fraction: 0.3, test_fraction: 0.3}}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "components.clean",
            "--params",
            str(params),
            "--out",
            str(out),
            "--report",
            str(report_path),
        ],
        check=True,
        capture_output=True,
    )
    report = json.loads(report_path.read_text())
    assert report["n_input"] == 12 and report["n_kept"] == 8
    assert report["dropped_by_reason"] == {
        "not_in_class_folder": 1,
        "duplicate": 1,
        "unreadable": 1,
        "unsupported_file": 1,
    }
    reasons = {d["id"].rsplit("/", 2)[-1]: d for d in report["dropped"]}
    assert reasons["copy.bmp"]["reason"] == "duplicate"
    assert "cat/0.png" in reasons["copy.bmp"]["detail"] and "'cat'" in reasons["copy.bmp"]["detail"]
    assert reasons["broken.png"]["reason"] == "unreadable"
    assert report["kept_per_class"] == {"cat": 4, "dog": 4}
    with np.load(out / "images.npz") as saved:
        assert saved["images"].shape == (8, 8, 8, 1) and saved["images"].dtype == np.uint8
        assert saved["classes"].tolist() == ["cat", "dog"]
        np.testing.assert_array_equal(saved["images"][0, ..., 0], np.asarray(Image.open(dirty_folder / "cat/0.png")))
    assert folder_hashes(dirty_folder) == before, "raw data must never be modified"


def test_mixed_image_sizes_need_image_size_or_are_resized(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (8, 8), 10).save(tmp_path / "a" / "small.png")
    Image.new("RGB", (16, 12), (200, 0, 0)).save(tmp_path / "b" / "big.jpg")
    files, _, _ = read_image_folder(tmp_path)
    with pytest.raises(UserError, match=r"big.jpg: image is 12x16 but most are 8x8; set data.image_size"):
        clean_images(files, Data(path=str(tmp_path)))
    with pytest.raises(UserError, match=r"big.jpg: .*set clean.on_bad_file: drop"):
        clean_images([(f"{tmp_path}/b/big.jpg", "b", b"not an image")], Data(), Clean(on_bad_file="fail"))
    resized = clean_images(files, Data(path=str(tmp_path), image_size=(8, 8), channels=3))
    assert resized.features.shape == (2, 8, 8, 3)


def test_cli_error_is_one_line_naming_the_folder_and_exit_1(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{path: {tmp_path / 'missing'}}}\n")
    args = [
        sys.executable,
        "-m",
        "components.clean",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "o"),
        "--report",
        str(tmp_path / "r.json"),
    ]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: folder not found; "
        "set data.path in params.yaml to a folder of class sub-folders"
    ]
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.json").exists()
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_16_bit_images_are_scaled_not_clipped():
    import io

    from components.image_files import decode

    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 257, 4112, 32896, 65535]], dtype=np.uint16)).save(buffer, format="PNG")
    assert decode(buffer.getvalue())[0, :, 0].tolist() == [0, 1, 16, 128, 255]
