"""normalise: stratified train/val/test split, then preprocessing fitted on train only and applied to all.

What the preprocessing is depends on data.kind (components/kinds/): per-channel mean/std of image pixels;
imputation, clipping, scaling and one-hot categories of table columns, after leaving out train outliers
when asked (val and test keep every example, as the served model will see them). The fitted preprocessing
is saved in outputs/preprocess/ as data and travels with the registered model, so the served model takes
raw input. The split sizes and any train examples left out go to the report (reports/split.json).

    python -m components.normalise --clean outputs/clean --out outputs/split --preprocess outputs/preprocess \
        --report reports/split.json
"""

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components import kinds
from components.errors import run_cli
from components.io import atomic_path, load_arrays, read_json, save_arrays, write_json
from components.kinds.base import DataKind

# Saved table transformers (skops) name these two classes as components.normalise.*: loading them imports them here.
from components.kinds.table_preprocessing import IQRClipper, MedianImputer  # noqa: F401
from components.params import Params, Split, load_params

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def save_preprocess(path: Path, meta: dict, preprocessor) -> None:
    """outputs/preprocess/: meta.json (kind, classes, input settings) and the kind's fitted preprocessing
    (e.g. normaliser.json for images; columns.json, transformer.skops and schema.yaml for tables)."""
    path.mkdir(parents=True, exist_ok=True)
    kinds.get(meta["kind"]).save_preprocessing(path, preprocessor)
    write_json(path / "meta.json", meta)


def load_preprocess(path: Path) -> tuple[dict, object]:
    """The preprocessing saved by save_preprocess: (meta.json, the kind's fitted preprocessor), loaded as data
    (JSON, skops restricted to an allow-list): nothing is unpickled, so a crafted file cannot run code.
    Raises UserError naming the file when it is missing, in an older pickled form, or holds other types."""
    meta = read_json(path / "meta.json")
    return meta, kinds.get(meta.get("kind")).load_preprocessing(path)


def stratified_split(labels: np.ndarray, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Indices of each split, stratified by class and fixed by the seed (clean made every class big enough)."""
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=split.test_fraction, stratify=labels, random_state=seed)
    val_share = split.val_fraction / (1 - split.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_and_preprocess(
    kind: DataKind,
    features,
    labels: np.ndarray,
    meta: dict,
    params: Params,
) -> tuple[dict, object, list[dict]]:
    """Split the cleaned examples (features as kind.load_clean gives them, labels int64 (n,)), fit the kind's
    preprocessing on the train split only, and transform every split. Returns the parts ({"index", "raw",
    "x" float32, "y"} per split), the preprocessor and the train examples it left out ({"row": position in
    the cleaned examples, "reason", "detail", "column"}). Pass the features without keeping a name for them:
    once split, they are freed (memory on big tables)."""
    indices = stratified_split(labels, params.split, params.seed)
    raw = {name: rows(features, idx) for name, idx in indices.items()}
    del features
    preprocessor, left_out = kind.fit(raw["train"], meta, params)
    dropped = [d | {"row": int(indices["train"][d["row"]])} for d in left_out]
    if left_out:
        keep = np.ones(len(indices["train"]), dtype=bool)
        keep[[d["row"] for d in left_out]] = False
        indices["train"], raw["train"] = indices["train"][keep], rows(raw["train"], np.flatnonzero(keep))
    parts = {
        name: {
            "index": idx,
            "raw": raw[name],
            "x": kind.transform(preprocessor, raw[name], f"{name} split"),
            "y": labels[idx],
        }
        for name, idx in indices.items()
    }
    return parts, preprocessor, dropped


def rows(features, positions: np.ndarray):
    """The examples at these positions: of an array (first axis), or of a DataFrame (renumbered from 0)."""
    if isinstance(features, pd.DataFrame):
        return features.iloc[positions].reset_index(drop=True)
    return features[positions]


def load_raw(split_dir: Path, name: str):
    """The raw inputs of one split, as the served model takes them: pixels (n, h, w, c) or a DataFrame."""
    table = split_dir / f"{name}_raw.parquet"
    if table.exists():
        return pd.read_parquet(table)
    return load_arrays(split_dir / f"{name}.npz")["raw"].astype(np.float32)


def normalise_files(
    clean_dir: Path,
    params: Params,
    out_dir: Path,
    preprocess_dir: Path,
    report_path: Path | None = None,
) -> dict:
    """outputs/clean -> out_dir/{train,val,test}.npz (+ *_raw.parquet where the raw input is a table), the fitted
    preprocessor, and the report (split sizes, train examples left out, e.g. outliers, with ids and columns).
    params: seed, split and the sections the kind's fit reads (normalise, clean, text, train.arch/pretrained)."""
    meta = read_json(clean_dir / "meta.json")
    kind = kinds.get(meta["kind"])
    cleaned = kind.load_clean(clean_dir)
    ids, labels = cleaned["ids"], cleaned["labels"]
    # The features go straight into the call, so that they can be freed once split.
    parts, preprocessor, dropped = split_and_preprocess(kind, cleaned.pop("features"), labels, meta, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        raw = part.pop("raw")
        if isinstance(raw, pd.DataFrame):
            with atomic_path(out_dir / f"{name}_raw.parquet") as tmp:
                raw.to_parquet(tmp, index=False)
        else:
            part["raw"] = raw
        save_arrays(out_dir / f"{name}.npz", classes=np.array(meta["classes"]), ids=ids[part.pop("index")], **part)
    save_preprocess(preprocess_dir, meta, preprocessor)
    by_column: dict[str, Counter] = {}
    for d in dropped:
        by_column.setdefault(d["reason"], Counter())[d["column"]] += 1
    report = {
        "n_per_split": {name: len(part["y"]) for name, part in parts.items()},
        "n_dropped_from_train": len(dropped),
        "dropped_by_column": {reason: dict(counts) for reason, counts in by_column.items()},
        "dropped": [
            {"id": str(ids[d["row"]]), "reason": d["reason"], "detail": d["detail"], "column": d["column"]}
            for d in dropped
        ],
    }
    if report_path is not None:
        write_json(report_path, report)
    log.info(
        "split %s (stratified, seed %d); preprocessing fitted on the %d train examples%s",
        report["n_per_split"],
        params.seed,
        len(parts["train"]["y"]),
        f" ({len(dropped)} train examples left out)" if dropped else "",
    )
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Split stratified and normalise (fitted on train only).")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--clean", type=Path, required=True, help="clean stage's output folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for train/val/test .npz")
    parser.add_argument("--preprocess", type=Path, required=True, help="folder for the fitted preprocessing")
    parser.add_argument("--report", type=Path, help="split sizes and train rows dropped (JSON)")
    args = parser.parse_args(argv)
    p = load_params(args.params)
    normalise_files(args.clean, p, args.out, args.preprocess, args.report)


if __name__ == "__main__":
    run_cli(main)
