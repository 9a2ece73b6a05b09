"""Real-world files through real `dvc repro`, then `components.predict` on new files of the same kind:
a European Excel CSV (BOM, ';', decimal commas, '.' thousands, a class named NA, stray spaces, '-' for
missing) and a folder of transparent PNG icons with the clutter operating systems leave beside them."""

import codecs
import hashlib
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.sample_data import digit_images
from conftest import make_project

REGIONS = ("NA", "EU", "AS")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def european_rows(n: int, seed: int) -> pd.DataFrame:
    """Rows as typed values; region decides size and population, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    region = np.array(REGIONS)[np.arange(n) % 3]
    shift = np.arange(n) % 3
    return pd.DataFrame(
        {
            "region": region,
            "size": np.round(1.5 + 2.0 * shift + rng.normal(0, 0.4, n), 2),
            "population": (20_000 + 15_000 * shift + rng.integers(0, 4000, n)).astype(int),
            "temp": np.round(rng.normal(15, 5, n), 1),
            "colour": rng.choice(["rot", "blau"], n),
        }
    )


def european_csv(rows: pd.DataFrame, notes: bool = False) -> bytes:
    """As European Excel saves it: BOM, ';', '1,5', '20.037', stray spaces, '-' for a missing temperature;
    with notes=True an extra column of quoted notes spanning two lines (what a free-text field exports)."""
    lines = ["region;size;population;temp;colour" + (";notes" if notes else "")]
    for i, row in enumerate(rows.itertuples()):
        region = f" {row.region}" if i % 5 == 0 else f"{row.region} " if i % 5 == 1 else row.region
        temp = "-" if i % 9 == 0 else f"{row.temp}".replace(".", ",")
        population = f"{row.population:,}".replace(",", ".") if isinstance(row.population, int) else row.population
        fields = [
            region,
            f"{row.size}".replace(".", ","),
            population,
            temp,
            f" {row.colour}" if i % 4 == 0 else row.colour,
        ]
        if notes:
            fields.append(f'"checked by {i % 3};\nsecond line"' if i % 2 else "ok")
        lines.append(";".join(fields))
    return codecs.BOM_UTF8 + ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    project = make_project(
        tmp_path_factory.mktemp("regions") / "project",
        per_class=3,
        params={
            "data": {"kind": "tabular", "path": "data/regions.csv", "target": "region"},
            "train": {"epochs": 40, "patience": 8, "hidden": [32, 32], "gpus": 0},
            "register": {"model_name": "regions-classifier", "min_macro_f1": 0.6},
            "mlflow": {"experiment": "regions"},
        },
    )
    shutil.rmtree(project.root / "data" / "digits")
    raw = project.root / "data" / "regions.csv"
    project.rows = european_rows(240, seed=0)
    raw.write_bytes(european_csv(project.rows))
    project.raw_hash = sha256(raw)
    project.run("dvc", "add", "-q", "data")
    project.stages = project.repro()
    return project


def test_a_european_excel_csv_trains_three_classes_named_as_written(regions):
    assert regions.stages == ["clean", "normalise", "augment", "train", "evaluate", "register"]
    metrics = regions.json("reports/metrics.json")
    per_class = regions.json("reports/plots/per_class.json")
    assert {row["class"] for row in per_class} == set(REGIONS), "NA is a region, not a missing label"
    assert metrics["macro_f1"] >= 0.8
    report = regions.json("reports/clean.json")
    assert report["kept_per_class"] == {"AS": 80, "EU": 80, "NA": 80} and report["n_dropped"] == 0
    read = report["read"]
    assert (read["encoding"], read["sep"], read["decimal"]) == ("utf-8-sig", ";", ",")
    assert read["thousands_by_column"] == {"population": "."}
    assert read["missing_markers_by_column"] == {"temp": {"-": 27}}
    assert read["whitespace_stripped_by_column"] == {"region": 96, "colour": 60}
    meta = regions.json("outputs/clean/meta.json")
    assert meta["numeric"] == ["size", "population", "temp"] and meta["categorical"] == ["colour"]
    cleaned = pd.read_parquet(regions.root / "outputs/clean/table.parquet")
    np.testing.assert_allclose(cleaned["size"], regions.rows["size"])
    np.testing.assert_array_equal(cleaned["population"], regions.rows["population"])
    assert regions.json("reports/registration.json")["promoted"] is True
    assert sha256(regions.root / "data" / "regions.csv") == regions.raw_hash


def predict(project, source, out, *options: str, model: str = "models:/regions-classifier@champion"):
    """`python -m components.predict` in the project; the caller checks the exit code."""
    return project.run(
        sys.executable,
        "-m",
        "components.predict",
        "--model",
        model,
        "--input",
        str(source),
        "--output",
        str(out),
        *options,
        check=False,
    )


def test_predict_reads_new_files_as_training_did_and_spells_labels_the_same(regions, tmp_path):
    """The test split's rows, written again as European Excel would (with a notes column spanning lines):
    the champion's labels equal evaluate's predictions, spelled as the training labels."""
    test_rows = np.load(regions.root / "outputs/split/test.npz")["ids"].astype(int)
    source = tmp_path / "new.csv"
    source.write_bytes(european_csv(regions.rows.iloc[test_rows], notes=True))
    result = predict(regions, source, tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    expected = pd.read_csv(regions.root / "reports/predictions.csv", keep_default_na=False)
    assert predicted["label"].tolist() == expected["predicted"].tolist()
    assert set(predicted["label"]) <= set(REGIONS) and "NA" in set(predicted["label"])
    assert list(predicted.columns) == ["id", "label", "prob_AS", "prob_EU", "prob_NA"]


def test_predict_errors_say_missing_and_name_the_file_line(regions, tmp_path):
    rows = regions.rows.head(30)
    missing = tmp_path / "missing.csv"
    missing.write_bytes(european_csv(rows).replace(b";colour", b";color"))
    result = predict(regions, missing, tmp_path / "x.csv")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert (
        f"{missing}: column 'colour' is missing; the model needs columns size, population, temp, colour"
        in result.stderr
    )
    capital = tmp_path / "capital.csv"
    capital.write_bytes(european_csv(rows).replace(b";colour", b";Colour"))
    assert (
        "column 'colour' is missing (the file has 'Colour': names are case-sensitive)"
        in predict(regions, capital, tmp_path / "x.csv").stderr
    )

    bad = tmp_path / "bad.csv"
    rows = rows.astype({"population": object})
    rows.iloc[20, rows.columns.get_loc("population")] = "about 20k"
    bad.write_bytes(european_csv(rows, notes=True))
    physical = bad.read_text(encoding="utf-8-sig").splitlines()  # as grep -n and editors count them
    [bad_line] = [n for n, line in enumerate(physical, 1) if "about 20k" in line]
    assert bad_line > 22, "notes spanning lines put the physical line after the row number"
    result = predict(regions, bad, tmp_path / "x.csv")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{bad} line {bad_line}: column 'population' holds 'about 20k', not a number" in result.stderr, (
        "the physical line, as grep -n shows it, after notes that span two lines"
    )
    assert not (tmp_path / "x.csv").exists()

    huge = tmp_path / "huge.csv"
    rows = regions.rows.head(30).astype({"temp": object})
    rows.iloc[7, rows.columns.get_loc("temp")] = "1e400"  # beyond float64: infinity once parsed
    huge.write_bytes(european_csv(rows))
    [huge_line] = [n for n, line in enumerate(huge.read_bytes().splitlines(), 1) if b"1e400" in line]
    result = predict(regions, huge, tmp_path / "x.csv")
    assert f"{huge} line {huge_line}: column 'temp' holds infinity" in result.stderr, result.stderr
    result = predict(regions, missing, tmp_path / "x.json")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: --output {tmp_path / 'x.json'}: write .csv or .parquet"


def test_predict_reads_a_file_written_otherwise_with_csv_overrides(regions, tmp_path):
    """The model reads files as its training file (';' and decimal commas); a US export needs --csv."""
    us = tmp_path / "us.csv"
    regions.rows.head(30).to_csv(us, index=False)  # ',' separator, '.' decimals
    result = predict(regions, us, tmp_path / "out.csv")
    assert (
        result.returncode == 1
        and "us.csv: read as one column 'region,size,population,temp,colour' with the "
        "separator ';' the model's training file used; pass --csv sep=... with this file's separator"
        in result.stderr
    )
    result = predict(regions, us, tmp_path / "out.csv", "--csv", "sep=,", "--csv", "decimal=.")
    assert result.returncode == 0, result.stderr[-2000:]
    european = tmp_path / "eu.csv"
    european.write_bytes(european_csv(regions.rows.head(30)))
    assert predict(regions, european, tmp_path / "eu_out.csv").returncode == 0
    assert pd.read_csv(tmp_path / "out.csv")["label"].tolist() == pd.read_csv(tmp_path / "eu_out.csv")["label"].tolist()
    result = predict(regions, us, tmp_path / "x.csv", "--csv", "seperator=,")
    assert result.returncode == 1 and "--csv: data.csv.seperator: unknown key (known keys here: sep," in result.stderr


def icon_folder(root, per_class: int = 40):
    """Digits 0-2 as black ink on a transparent background, stored as RGBA with (0, 0, 0, 0) where
    transparent (a background removed in an editor), 16x16, plus the clutter of three operating systems."""
    images, labels = digit_images()
    for index in np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(3)]):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., 3] = images[index]
        folder = root / f"digit_{labels[index]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba, "RGBA").resize((16, 16), Image.Resampling.NEAREST).save(folder / f"{index:04d}.png")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "__MACOSX" / "digit_0").mkdir(parents=True)
    (root / "__MACOSX" / "digit_0" / "._0000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "digit_1" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


def test_transparent_icons_with_clutter_and_a_bomb_train_and_predict(tmp_path):
    project = make_project(
        tmp_path / "project",
        per_class=1,
        params={
            "data": {"path": "data/icons", "channels": 1},
            "train": {"epochs": 15, "patience": 5, "width": 16},
            "register": {"model_name": "icons", "min_macro_f1": 0.7},
            "mlflow": {"experiment": "icons"},
        },
    )
    shutil.rmtree(project.root / "data" / "digits")
    root = project.root / "data" / "icons"
    icon_folder(root)
    Image.new("1", (13_500, 13_500)).save(root / "digit_2" / "scan.png", optimize=True)  # 182 megapixels
    project.run("dvc", "add", "-q", "data")
    assert project.repro()[-1] == "register"
    report = project.json("reports/clean.json")
    assert report["n_kept"] == 120 and report["dropped_by_reason"] == {"too_many_pixels": 1}
    assert sorted(s["id"].split("icons/")[1] for s in report["skipped"]) == [
        ".DS_Store",
        "__MACOSX/digit_0/._0000.png",
        "digit_1/Thumbs.db",
    ]
    assert project.json("reports/metrics.json")["macro_f1"] >= 0.8, "decoded black on black, nothing is learnt"

    new = tmp_path / "new"
    shutil.copytree(root / "digit_1", new / "batch")
    (new / "batch" / "scan.png").unlink(missing_ok=True)
    (new / ".DS_Store").write_bytes(b"\x00")
    icons = "models:/icons@champion"
    (new / "batch" / "._0100.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    result = predict(project, new, tmp_path / "p.csv", model=icons)
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert len(predicted) == 40 and not predicted["id"].str.contains("/\\.").any(), result.stderr[-1000:]
    assert (predicted["label"] == "digit_1").mean() >= 0.8

    # the training's pixel limit travels with the model: a bomb in a batch is named, never decoded
    shutil.copy(root / "digit_2" / "scan.png", new / "batch" / "zz_scan.png")
    result = predict(project, new, tmp_path / "q.csv", model=icons)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        f"error: {new / 'batch' / 'zz_scan.png'}: image is 13500x13500 = 182 megapixels, more than "
        "clean.max_image_pixels (89478485); fix or remove it"
    )
    (new / "batch" / "zz_scan.png").unlink()
    Image.new("L", (40, 40), 255).save(new / "batch" / "zz_big.png")
    result = predict(project, new, tmp_path / "q.csv", model=icons)
    assert result.returncode == 1 and f"{new / 'batch' / 'zz_big.png'}: image is 40x40, but " in result.stderr

    # A batch of only other-sized images: the size-agnostic CNN would score them, confidently and wrongly;
    # the model's signature (16x16 grey) refuses them in one line.
    other = tmp_path / "other"
    other.mkdir()
    Image.new("L", (40, 40), 255).save(other / "big.png")
    result = predict(project, other, tmp_path / "r.csv", model=icons)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "error: input of shape (40, 40, 1) per example, but the model was trained on (16, 16, 1) (its signature); "
        "give input of that shape (images: train with data.image_size to resize any input)"
    )
    assert not (tmp_path / "r.csv").exists()
