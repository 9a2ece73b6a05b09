"""Bring your own data: tables and other image folders through the same `dvc repro`, with only params
changed; every bad input ends in one line naming the file and column/row/class, raw data untouched."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from components.sample_data import digit_images
from conftest import PENGUINS, Project, clean_cli, make_penguins_project, make_project


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Project:
    """The shipped example: examples/penguins/params.yaml over a project holding the raw penguins CSV."""
    project = make_penguins_project(tmp_path_factory.mktemp("penguins") / "project")
    project.raw_hash = sha256(project.root / PENGUINS)
    project.stages = project.repro()
    return project


def test_penguins_train_and_register_from_params_alone(penguins):
    assert penguins.stages == ["clean", "normalise", "augment", "train", "evaluate", "register"]
    metrics = penguins.json("reports/metrics.json")
    assert metrics["macro_f1"] >= 0.95
    assert {row["class"] for row in penguins.json("reports/plots/per_class.json")} == {"Adelie", "Chinstrap", "Gentoo"}
    registration = penguins.json("reports/registration.json")
    assert registration["model_name"] == "penguins-classifier" and registration["promoted"] is True
    report = penguins.json("reports/clean.json")
    # 2 rows have no measurements at all (dropped by the per-column override), 9 more lack only sex (imputed)
    assert report["dropped_by_column"] == {"missing_value": {"bill_length_mm": 2}}
    assert report["imputed_by_column"] == {"sex": 9}
    assert report["n_input"] == 344 and report["n_kept"] == 342
    assert sha256(penguins.root / PENGUINS) == penguins.raw_hash, "raw data must never be modified"


def test_table_preprocessing_is_fitted_on_train_and_travels_with_the_model(penguins):
    from components.normalise import load_preprocess

    _, preprocessor = load_preprocess(penguins.root / "outputs/preprocess")
    train = pd.read_parquet(penguins.root / "outputs/split/train_raw.parquet")
    scaler = preprocessor.transformer.named_transformers_["numeric"][-1]
    clipper = preprocessor.transformer.named_transformers_["numeric"][1]
    clipped = np.clip(
        train[preprocessor.numeric].fillna(train[preprocessor.numeric].median()), clipper.low_, clipper.high_
    )
    np.testing.assert_allclose(scaler.mean_, clipped.mean(), rtol=1e-9)
    assert "categorical__island_Biscoe" in preprocessor.feature_names()
    # unknown category and missing values at prediction time: no crash, one-hot all zero for the unknown
    odd = train.head(2).assign(island=["Atlantis", None], sex=[None, "female"])
    x = preprocessor.transform(odd)
    island = [i for i, name in enumerate(preprocessor.feature_names()) if "island" in name]
    assert x[0, island].sum() == 0 and np.isfinite(x).all()


def test_batch_predict_matches_the_predictions_behind_metrics_json(penguins, tmp_path):
    # The test split's rows as they stand in the raw CSV (integer columns, the target column included),
    # as a new file from a user would look.
    test_rows = np.load(penguins.root / "outputs/split/test.npz")["ids"].astype(int)
    source = tmp_path / "new_penguins.csv"
    raw = pd.read_csv(penguins.root / PENGUINS, dtype=str, keep_default_na=False).iloc[test_rows]
    raw.to_csv(source, index=False)
    assert pd.read_csv(source).dtypes["flipper_length_mm"] == "int64", "the case that needs schema coercion"
    out = tmp_path / "predicted.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.predict",
            "--model",
            "models:/penguins-classifier@champion",
            "--input",
            str(source),
            "--output",
            str(out),
        ],
        cwd=tmp_path,
        env=penguins.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = pd.read_csv(out)
    expected = pd.read_csv(penguins.root / "reports/predictions.csv")
    assert predicted["label"].tolist() == expected["predicted"].tolist()
    assert list(predicted.columns) == ["id", "label", "prob_Adelie", "prob_Chinstrap", "prob_Gentoo"]

    bad = tmp_path / "bad.csv"
    pd.read_csv(source).assign(bill_depth_mm="deep").to_csv(bad, index=False)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.predict",
            "--model",
            "models:/penguins-classifier@champion",
            "--input",
            str(bad),
            "--output",
            str(tmp_path / "x.csv"),
        ],
        cwd=tmp_path,
        env=penguins.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert (
        f"{bad} line 2: column 'bill_depth_mm' holds 'deep', not a number; the model takes numbers here"
        in result.stderr
    ), "a file line, as in training errors, not a row number from 0"
    assert not (tmp_path / "x.csv").exists()


def test_failed_run_keeps_the_champion_and_leaves_no_fresh_output(penguins):
    """Runs last in this module: it breaks the project's data."""
    import mlflow

    client = mlflow.MlflowClient(
        tracking_uri=penguins.env["MLFLOW_TRACKING_URI"], registry_uri=penguins.env["MLFLOW_TRACKING_URI"]
    )
    before = client.get_model_version_by_alias("penguins-classifier", "champion")
    raw = pd.read_csv(penguins.root / PENGUINS, dtype=str)
    raw.loc[5, "body_mass_g"] = "heavy"
    raw.to_csv(penguins.root / PENGUINS, index=False)
    broken = sha256(penguins.root / PENGUINS)
    result = penguins.run("dvc", "repro", check=False)
    assert result.returncode != 0
    assert "line 7: column 'body_mass_g' holds 'heavy', not a number" in result.stdout + result.stderr
    assert sha256(penguins.root / PENGUINS) == broken
    status = yaml.safe_load(penguins.run("dvc", "status", "--json").stdout)
    assert "clean" in status, "DVC must not treat the failed stage's outputs as fresh"
    assert not list((penguins.root / "outputs").rglob("*.tmp*"))
    after = client.get_model_version_by_alias("penguins-classifier", "champion")
    assert (after.version, after.run_id) == (before.version, before.run_id)


def test_an_rgb_image_folder_of_mixed_sizes_trains_with_params_only(tmp_path):
    """Another size and mode than the digits: RGB JPEGs of several sizes, resized to 16x16 in clean."""
    project = make_project(
        tmp_path / "project",
        per_class=1,
        params={
            "data": {"path": "data/colour", "image_size": [16, 16], "channels": 3},
            "train": {"epochs": 20, "patience": 5, "width": 16},
            "register": {"min_macro_f1": 0.5, "model_name": "colour-digits"},
        },
    )
    shutil.rmtree(project.root / "data" / "digits")
    images, labels = digit_images(limit_per_class=60)
    rng = np.random.default_rng(0)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if label > 3:
            continue
        size = int(rng.integers(12, 40))
        tint = rng.integers(80, 256, 3)
        rgb = (image[..., None] / 255.0 * tint).astype(np.uint8)
        folder = project.root / "data" / "colour" / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").resize((size, size)).save(folder / f"{i}.jpg", quality=95)
    project.run("dvc", "add", "-q", "data")
    assert project.repro()[-1] == "register"
    registration = project.json("reports/registration.json")
    assert registration["model_name"] == "colour-digits" and registration["version"] == "1"
    assert project.json("reports/metrics.json")["macro_f1"] >= 0.5
    import mlflow

    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    info = mlflow.models.get_model_info("models:/colour-digits/1")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 16, 16, 3]
    # batch prediction straight from a folder of new images, decoded as in training
    new = project.root / "new"
    shutil.copytree(project.root / "data" / "colour" / "digit_2", new / "some" / "where")
    out = project.root / "predicted.csv"
    project.run(
        sys.executable,
        "-m",
        "components.predict",
        "--model",
        "models:/colour-digits/1",
        "--input",
        str(new),
        "--output",
        str(out),
    )
    predicted = pd.read_csv(out)
    assert len(predicted) == 60 and (predicted["label"] == "digit_2").mean() > 0.5


# ---------------------------------------------------------------- bad input, one line each


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    else:
        path.write_bytes(content)
    return path


def table(n=30, **columns):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 2, n).round(2),
            "colour": rng.choice(["red", "blue"], n),
            "kind": np.array(["a", "b", "c"])[np.arange(n) % 3],
        }
    )
    return frame.assign(**columns)


BAD_TABLES = {
    "missing target column": (
        "t.csv",
        table().drop(columns="kind"),
        {},
        "t.csv: target column 'kind' not found (columns: size, colour); set data.target",
    ),
    "empty file": ("t.csv", b"", {}, "t.csv: file is empty; export the table again"),
    "unreadable file": ("t.parquet", b"PAR1 this is not parquet at all", {}, "t.parquet: cannot be read as PARQUET"),
    "unknown format": (
        "t.xlsx",
        b"PK\x03\x04",
        {},
        "t.xlsx: unknown format '.xlsx'; use a .csv, .tsv, .parquet or .jsonl file",
    ),
    "numeric column holding text": (
        "t.csv",
        table(size=["12.5"] * 29 + ["twelve"]),
        {},
        "t.csv line 31: column 'size' holds 'twelve', not a number; fix the value, add it "
        "to data.csv.na_values if it marks a missing value, or list 'size' in "
        "data.categorical",
    ),
    "entirely empty column": (
        "t.csv",
        table(notes=[None] * 30),
        {},
        "t.csv: column 'notes' is entirely empty; fill it or leave it out of data.features",
    ),
    "only one class": (
        "t.csv",
        table(kind=["a"] * 30),
        {},
        "t.csv: only class 'a' left after cleaning; a classifier needs at least two classes",
    ),
    "class too small to split": (
        "t.csv",
        table(kind=["c", "c"] + ["a", "b"] * 14),
        {"small_classes": "fail"},
        "t.csv: class 'c' has 2 examples, too few for the stratified 0.15/0.2 val/test split (need 7)",
    ),
    "infinity left after cleaning": (
        "t.csv",
        table(size=[1.0] * 29 + [np.inf]),
        {},
        "t.csv line 31: column 'size' holds infinity; fix the value or drop the row",
    ),
    "missing value with missing: fail": (
        "t.csv",
        table(colour=["red"] * 29 + [None]),
        {"missing": "fail"},
        "t.csv line 31: column 'colour' has no value",
    ),
    "typo in a column setting": (
        "t.csv",
        table(),
        {"missing_by_column": {"colur": "drop"}},
        "t.csv: clean.missing_by_column names column 'colur', which is not a feature",
    ),
}


def test_the_target_listed_as_a_feature_is_refused(tmp_path, capsys):
    path = write(tmp_path / "data" / "t.csv", table())
    code, lines, _, _ = run_clean(
        tmp_path, capsys, {"kind": "tabular", "path": str(path), "target": "kind", "features": ["size", "kind"]}, {}
    )
    assert code == 1 and "the target 'kind' is listed in data.features" in lines[0]


def test_categories_and_labels_read_the_same_however_the_file_typed_them(tmp_path):
    """A numeric column used as a category: 3.0 in a training CSV with gaps and 3 in a new file are one category."""
    from components.kinds.table_clean import clean_table
    from components.kinds.table_preprocessing import TablePreprocessor
    from components.params import Clean, Data

    frame = table(level=[1.0, 2.0, None] * 10, kind=[0.0, 1.0, None] * 10)
    data = Data(kind="tabular", target="kind", categorical=["level"])
    cleaned = clean_table(frame, data, Clean(), "t.csv")
    assert set(cleaned.labels) == {"0", "1"} and set(cleaned.features["level"].dropna()) == {"1", "2"}
    preprocessor = TablePreprocessor(cleaned.settings["numeric"], cleaned.settings["categorical"]).fit(cleaned.features)
    new = pd.DataFrame({"size": [10.0], "colour": ["red"], "level": [2]})  # an int this time
    level = [i for i, name in enumerate(preprocessor.feature_names()) if name == "categorical__level_2"]
    assert preprocessor.transform(new)[0, level] == [1.0], "the int 2 must hit the category '2', not 'unknown'"


def run_clean(tmp_path, capsys, data: dict, clean_cfg: dict):
    out, report = tmp_path / "out" / "clean", tmp_path / "out" / "clean.json"
    code, lines = clean_cli(capsys, {"data": data, "clean": clean_cfg}, out, report)
    return code, lines, out, report


@pytest.mark.parametrize("case", BAD_TABLES, ids=list(BAD_TABLES))
def test_bad_table_gives_one_line_naming_file_and_place(case, tmp_path, capsys):
    name, content, clean_cfg, message = BAD_TABLES[case]
    path = write(tmp_path / "data" / name, content)
    before = sha256(path)
    code, lines, out, report = run_clean(
        tmp_path, capsys, {"kind": "tabular", "path": str(path), "target": "kind"}, clean_cfg
    )
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {tmp_path / 'data'}/") and message in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    assert sha256(path) == before, "raw data must be byte-identical after a failed run"
    assert not out.exists() and not report.exists(), "a failed stage leaves no output"


def test_unreadable_image_fails_when_asked_and_names_the_file(tmp_path, capsys):
    root = tmp_path / "images"
    for label in ("a", "b"):
        for i in range(8):
            write(root / label / f"{i}.png", b"")
            Image.new("L", (8, 8), 30 * i + (label == "b")).save(root / label / f"{i}.png")
    broken = write(root / "b" / "broken.png", b"\x89PNG\r\n\x1a\n truncated")
    code, lines, out, _ = run_clean(tmp_path, capsys, {"path": str(root)}, {"on_bad_file": "fail"})
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: {broken}: ") and "set clean.on_bad_file: drop" in lines[0]
    assert not out.exists()
