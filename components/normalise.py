"""normalise: stratified train/val/test split, then preprocessing fitted on train only and applied to all.

Images: per-channel mean/std of the pixels. Tables: optionally, train rows beyond clean.zscore standard
deviations of the train split's own mean are dropped (clean.outliers: zscore_drop; val and test keep
every row, as the served model will see them); then a pandera schema of the feature columns,
median / most-frequent imputation, optional IQR clipping, standard/min-max/robust scaling and
one-hot categories (unknown ones ignored), all scikit-learn. The fitted preprocessor is saved in
outputs/preprocess/ and travels with the registered model, so the served model takes raw input.
The split sizes and any train rows dropped go to the report (reports/split.json).

    python -m components.normalise --clean outputs/clean --out outputs/split --preprocess outputs/preprocess \
        --report reports/split.json
"""
import argparse
import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from components.errors import UserError, run_cli
from components.io import atomic_path, load_arrays, read_json, read_parquet, save_arrays, write_json
from components.params import Clean, Normalise, Split, load_params

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
CHUNK_VALUES = 1 << 24      # tables are transformed this many values at a time: scikit-learn's copies stay small


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
        if images.shape[-1] != len(self.mean):
            raise UserError(f"input has {images.shape[-1]} channels, the model expects {len(self.mean)}")
        scaled = (images / np.float32(255.0) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2), dtype=np.float32)

    def to_dict(self) -> dict:
        return {"method": "standard", "pixel_scale": 255.0, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, state: dict) -> "Normaliser":
        return cls(mean=list(state["mean"]), std=list(state["std"]))


class IQRClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clip each column to [Q1 - k*IQR, Q3 + k*IQR], the quartiles learnt on train."""

    def __init__(self, factor: float = 1.5):
        self.factor = factor

    def fit(self, x, y=None):
        x = np.asarray(x, dtype=float)
        self.n_features_in_ = x.shape[1]
        q1, q3 = np.nanpercentile(x, [25, 75], axis=0)
        self.low_, self.high_ = q1 - self.factor * (q3 - q1), q3 + self.factor * (q3 - q1)
        return self

    def transform(self, x):
        return np.clip(x, self.low_, self.high_)


class MedianImputer(SimpleImputer):
    """SimpleImputer(strategy="median") that finds the train medians by partitioning each column
    (np.nanmedian) instead of sorting a masked copy of the whole array: the same medians, in a fraction
    of the time and memory on millions of rows. Everything else, transform included, is SimpleImputer's."""

    def _dense_fit(self, X, strategy, missing_values, fill_value):
        if strategy != "median" or self.add_indicator or not (isinstance(missing_values, float)
                                                               and np.isnan(missing_values)):
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        self._fit_indicator(None)               # add_indicator is off: records that there is no indicator
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # an all-missing column: NaN, as SimpleImputer
            median = np.nanmedian(X, axis=0)
        median[np.isnan(median)] = 0 if self.keep_empty_features else np.nan
        return median


def require_columns(needed: list[str], present: list[str], source: str) -> None:
    """Raises UserError naming the columns of `needed` that `present` lacks, and any the file has in
    another letter case."""
    absent = [column for column in needed if column not in present]
    if absent:
        by_case = {str(c).lower(): c for c in present}
        other_case = [f"{by_case[c.lower()]!r}" for c in absent if c.lower() in by_case]
        hint = f" (the file has {', '.join(other_case)}: names are case-sensitive)" if other_case else ""
        raise UserError(f"{source}: column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} "
                        f"{'are' if len(absent) > 1 else 'is'} missing{hint}; the model needs columns "
                        f"{', '.join(needed)}")


def check_schema(schema, table: pd.DataFrame, source: str, inplace: bool = False, where=None) -> pd.DataFrame:
    """Validate (and coerce) a table with a pandera schema; the first failure becomes one line naming
    the column and the row (where(row) -> 'file line N' when given, else 'row N'). Used in training and,
    from the schema saved with the model, at prediction time. Raises UserError; a column the schema
    needs and the table lacks is named as missing.
    inplace: coerce the columns of `table` itself rather than of a copy of it."""
    import pandera.pandas as pa
    require_columns(list(schema.columns), list(table.columns), source)
    try:
        return schema.validate(table, lazy=True, inplace=inplace)
    except pa.errors.SchemaErrors as exc:
        case = exc.failure_cases.iloc[0]
        if case["column"] is None or case["index"] is None or pd.isna(case["index"]):
            raise UserError(f"{source}: {case['failure_case']}; the model needs columns "
                            f"{', '.join(schema.columns)}") from None
        expected = "a number" if "float" in str(schema.columns[case["column"]].dtype) else "text"
        place = where(int(case["index"])) if where else f"{source} row {case['index']}"
        from components.errors import shorten
        raise UserError(f"{place}: column {shorten(case['column'])} holds {shorten(case['failure_case'])}, "
                        f"which does not fit the model's schema (expected {expected})") from None


class TablePreprocessor:
    """Schema check, imputation, clipping, scaling and one-hot encoding of the feature columns."""

    def __init__(self, numeric: list[str], categorical: list[str], scaling: str = "standard",
                 clip_factor: float | None = None):
        self.numeric, self.categorical = numeric, categorical
        self.scaling, self.clip_factor = scaling, clip_factor
        steps = ([IQRClipper(clip_factor)] if clip_factor else []) + [SCALERS[scaling]()]
        # the step names make_pipeline gives, "simpleimputer" included, as before MedianImputer
        numeric_steps = Pipeline([("simpleimputer", MedianImputer(strategy="median"))]
                                 + [(type(step).__name__.lower(), step) for step in steps])
        self.transformer = ColumnTransformer([
            ("numeric", numeric_steps, numeric),
            ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                          OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical),
        ])
        import pandera.pandas as pa
        self.schema = pa.DataFrameSchema(
            {c: pa.Column(float, nullable=True, coerce=True) for c in numeric}
            | {c: pa.Column(str, nullable=True, coerce=True) for c in categorical}, strict=False)

    def settings(self) -> dict:
        """What rebuilds this preprocessor around its fitted transformer (see from_settings), as JSON."""
        return {"numeric": self.numeric, "categorical": self.categorical, "scaling": self.scaling,
                "clip_factor": self.clip_factor}

    @classmethod
    def from_settings(cls, settings: dict, transformer) -> "TablePreprocessor":
        """settings(): the columns and options; transformer: the fitted ColumnTransformer."""
        preprocessor = cls(list(settings["numeric"]), list(settings["categorical"]), settings["scaling"],
                           settings["clip_factor"])
        preprocessor.transformer = transformer
        return preprocessor

    def validate(self, table: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        """Apply the saved schema; categories are written as in training (3, 3.0, "3" -> "3") and
        scikit-learn gets object columns with NaN for missing ones."""
        from components.table_files import as_labels
        table = table.copy(deep=False)          # columns are replaced below, never written into
        # Float64 columns come through the schema unchanged but split into one block each, which scikit-learn
        # would then copy whole at every step: the frame gets them as they came, in one block, instead.
        frame = table[[c for c in self.numeric if c in table and table[c].dtype == np.float64]]
        for column in self.categorical:
            if column in table:
                table[column] = pd.Series(as_labels(table[column]), index=table.index).astype(object)
        checked = check_schema(self.schema, table, source, inplace=True)
        for column in self.numeric + self.categorical:
            if column not in frame:
                frame[column] = checked[column]
        for column in self.categorical:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
        return frame[self.numeric + self.categorical]

    def fit(self, table: pd.DataFrame) -> "TablePreprocessor":
        self.transformer.fit(self.validate(table, "train split"))
        return self

    def transform(self, table: pd.DataFrame, source: str = "input") -> np.ndarray:
        """Validate the whole table, then transform it in chunks of rows into one float32 array: every
        step works row by row, so the result is the same, without float64 copies of a big table."""
        frame = self.validate(table, source)
        x = np.empty((len(frame), len(self.feature_names())), dtype=np.float32)
        rows = max(1, CHUNK_VALUES // max(1, *x.shape[1:], frame.shape[1]))
        for start in range(0, max(len(frame), 1), rows):     # an empty table fails in scikit-learn, as before
            x[start:start + rows] = self.transformer.transform(frame.iloc[start:start + rows])
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            raise UserError(f"{source}: row {row}: feature {self.feature_names()[col]!r} is NaN or infinite after "
                            "preprocessing; clean that value")
        return x

    def feature_names(self) -> list[str]:
        return self.transformer.get_feature_names_out().tolist()

    def numeric_mask(self) -> np.ndarray:
        return np.array([name.startswith("numeric__") for name in self.feature_names()])


# The only types a saved table transformer may hold beyond skops' own allow-list (scikit-learn's estimators,
# numpy arrays, builtins): loading never imports or runs anything else, unlike pickle or joblib.
TRUSTED_TYPES = ["components.normalise.IQRClipper", "components.normalise.MedianImputer", "numpy.dtype"]


def save_preprocess(path: Path, meta: dict, preprocessor) -> None:
    """outputs/preprocess/: meta.json (kind, classes, input settings) and, for images, normaliser.json;
    for tables, columns.json (feature columns and settings), transformer.skops (the fitted scikit-learn
    transformer in skops' data-only format) and schema.yaml (the input contract, for people to read)."""
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(preprocessor, Normaliser):
        write_json(path / "normaliser.json", preprocessor.to_dict())
    else:
        write_json(path / "columns.json", preprocessor.settings())
        with atomic_path(path / "transformer.skops") as tmp:
            tmp.write_bytes(skops_bytes(preprocessor.transformer))
        with atomic_path(path / "schema.yaml") as tmp:
            tmp.write_text(preprocessor.schema.to_yaml())
    write_json(path / "meta.json", meta)


def skops_bytes(estimator) -> bytes:
    """skops.io.dumps(estimator) with every zip entry dated 1980-01-01: skops dates them now, and the same
    fitted transformer must give the same bytes (DVC hashes them)."""
    import io
    import zipfile
    import skops.io
    source, out = zipfile.ZipFile(io.BytesIO(skops.io.dumps(estimator))), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), source.read(info))
    return out.getvalue()


def load_preprocess(path: Path) -> tuple[dict, "Normaliser | TablePreprocessor"]:
    """The preprocessing saved by save_preprocess, loaded as data: JSON, and skops restricted to its
    allow-list plus TRUSTED_TYPES. Nothing is unpickled, so a crafted file cannot run code.
    Raises UserError naming the file when it is missing, in an older pickled form, or holds other types."""
    meta = read_json(path / "meta.json")
    if meta.get("kind") == "image_folder":
        return meta, Normaliser.from_dict(read_json(path / "normaliser.json"))
    if not (path / "transformer.skops").exists():
        old = " (transformer.joblib is a pickle, which is never loaded: rerun normalise, or re-register the model)" \
            if (path / "transformer.joblib").exists() else ""
        raise UserError(f"{path / 'transformer.skops'}: not found{old}")
    import skops.io
    try:
        transformer = skops.io.load(path / "transformer.skops", trusted=TRUSTED_TYPES)
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise UserError(f"{path / 'transformer.skops'}: holds types outside the allow-list "
                        f"({str(exc).split(':')[-1].strip()[:80]}); refusing to load it") from None
    except Exception as exc:        # not a skops file: a zip, JSON or numpy error, whatever it is
        raise UserError(f"{path / 'transformer.skops'}: not a readable skops file ({type(exc).__name__}); "
                        "rerun normalise") from None
    return meta, TablePreprocessor.from_settings(read_json(path / "columns.json"), transformer)


def stratified_split(labels: np.ndarray, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Indices of each split, stratified by class and fixed by the seed (clean made every class big enough)."""
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=split.test_fraction, stratify=labels, random_state=seed)
    val_share = split.val_fraction / (1 - split.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_and_normalise(images: np.ndarray, labels: np.ndarray, split: Split,
                        seed: int) -> tuple[dict[str, dict[str, np.ndarray]], Normaliser]:
    """Images: split, fit the normaliser on the train split only, and transform every split."""
    indices = stratified_split(labels, split, seed)
    normaliser = Normaliser().fit(images[indices["train"]])
    parts = {name: {"index": idx, "raw": images[idx], "x": normaliser.transform(images[idx]), "y": labels[idx]}
             for name, idx in indices.items()}
    return parts, normaliser


def train_outliers(train: pd.DataFrame, numeric: list[str], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the train split with |z| > threshold in any numeric column, z from the train split's own
    mean and (population) standard deviation, missing values ignored. Returns (outlier mask, bool (n,);
    the index into `numeric` of the first column each row is beyond, int (n,), meaningful where the mask is)."""
    if not numeric or train.empty:
        return np.zeros(len(train), dtype=bool), np.zeros(len(train), dtype=np.int64)
    values = train[numeric].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # an all-missing column: no outliers in it
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    std[~(std > 0)] = 1.0
    beyond = np.abs(values - mean) / std > threshold         # NaN compares False: never an outlier
    return beyond.any(axis=1), beyond.argmax(axis=1)


def split_and_preprocess_table(table: pd.DataFrame, labels: np.ndarray, meta: dict, split: Split, seed: int,
                               normalise: Normalise, clean: Clean) -> tuple[dict, TablePreprocessor, list[dict]]:
    """Tables: split, drop train outliers (clean.outliers: zscore_drop), fit the preprocessor on the train
    rows only, and transform every split. Returns the parts, the preprocessor and the train rows dropped
    ({"row": position in the cleaned table, "column"}). Pass the table without keeping a name for it:
    once split, it is freed (memory on big tables)."""
    indices = stratified_split(labels, split, seed)
    raw = {name: table.iloc[idx].reset_index(drop=True) for name, idx in indices.items()}
    del table
    dropped = []
    if clean.outliers == "zscore_drop":
        outlier, first = train_outliers(raw["train"], meta["numeric"], clean.zscore)
        dropped = [{"row": int(indices["train"][i]), "column": meta["numeric"][first[i]]}
                   for i in np.flatnonzero(outlier)]
        indices["train"] = indices["train"][~outlier]
        raw["train"] = raw["train"][~outlier].reset_index(drop=True)
    clip = clean.iqr_factor if clean.outliers == "iqr_clip" else None
    preprocessor = TablePreprocessor(meta["numeric"], meta["categorical"], normalise.numeric, clip)
    preprocessor.fit(raw["train"])
    parts = {name: {"index": idx, "raw": raw[name], "x": preprocessor.transform(raw[name], f"{name} split"),
                    "y": labels[idx]} for name, idx in indices.items()}
    return parts, preprocessor, dropped


def load_raw(split_dir: Path, name: str):
    """The raw inputs of one split, as the served model takes them: pixels (n, h, w, c) or a DataFrame."""
    table = split_dir / f"{name}_raw.parquet"
    if table.exists():
        return pd.read_parquet(table)
    return load_arrays(split_dir / f"{name}.npz")["raw"].astype(np.float32)


def normalise_files(clean_dir: Path, split: Split, seed: int, normalise: Normalise, clean: Clean, out_dir: Path,
                    preprocess_dir: Path, report_path: Path | None = None) -> dict:
    """outputs/clean -> out_dir/{train,val,test}.npz (+ *_raw.parquet for tables), the fitted preprocessor,
    and the report (split sizes, train rows dropped as outliers with their ids and columns)."""
    meta = read_json(clean_dir / "meta.json")
    dropped = []
    if meta["kind"] == "image_folder":
        arrays = load_arrays(clean_dir / "images.npz")
        ids, labels = arrays["ids"], arrays["labels"]
        parts, preprocessor = split_and_normalise(arrays["images"], labels, split, seed)
    else:
        path = clean_dir / "table.parquet"
        rows = read_parquet(path, columns=["_id", "_label"])
        ids, labels = rows["_id"].to_numpy().astype(str), rows["_label"].to_numpy()
        del rows
        features = [c for c in pq.read_schema(path).names if c not in ("_id", "_label")]
        # The table goes straight into the call, so that it can be freed once split.
        parts, preprocessor, dropped = split_and_preprocess_table(read_parquet(path, columns=features), labels, meta,
                                                                  split, seed, normalise, clean)
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
    detail = f"|z| > {clean.zscore} in {{!r}}, with the train split's mean and standard deviation"
    report = {"n_per_split": {name: len(part["y"]) for name, part in parts.items()},
              "n_dropped_from_train": len(dropped),
              "dropped_by_column": {"outlier": dict(Counter(d["column"] for d in dropped))} if dropped else {},
              "dropped": [{"id": str(ids[d["row"]]), "reason": "outlier", "detail": detail.format(d["column"]),
                           "column": d["column"]} for d in dropped]}
    if report_path is not None:
        write_json(report_path, report)
    log.info("split %s (stratified, seed %d); preprocessing fitted on the %d train examples%s",
             report["n_per_split"], seed, len(parts["train"]["y"]),
             f" ({len(dropped)} train outliers dropped)" if dropped else "")
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
    normalise_files(args.clean, p.split, p.seed, p.normalise, p.clean, args.out, args.preprocess, args.report)


if __name__ == "__main__":
    # Run the importable module's main, so the saved transformer names components.normalise.* (which
    # TRUSTED_TYPES allows) rather than __main__.*
    from components.normalise import main as importable_main
    run_cli(importable_main)
