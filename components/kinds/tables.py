"""data.kind tabular: a CSV/Parquet file with a target column, an MLP on imputed, scaled and one-hot features.

clean: the file read as written (components/table_files.py) and cleaned (table_clean.py); outputs/clean/
table.parquet. Preprocessing (table_preprocessing.py): optionally, train rows beyond clean.zscore standard
deviations of the train split's own mean are left out (clean.outliers: zscore_drop; val and test keep every
row, as the served model will see them); then schema, imputation, clipping, scaling and one-hot categories,
fitted on train. Augmentation: optional oversampling of smaller classes, and copies with Gaussian jitter on
the scaled numeric features.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.errors import UserError
from components.io import atomic_path, read_parquet, write_json
from components.kinds.base import Cleaned, GeneratorSpace
from components.params import Augment, Clean, Data, Params

if TYPE_CHECKING:
    import torch

    from components.kinds.table_preprocessing import TablePreprocessor

NETWORKS: tuple[str, ...] = ("mlp",)
SERVING_SETTINGS: tuple[str, ...] = ("target", "csv")
SERVING_PACKAGES: tuple[str, ...] = ()


# ---------------------------------------------------------------- clean


def read_clean(source: Path, data: Data, cfg: Clean) -> Cleaned:
    """The table file at source, cleaned: features a DataFrame of the feature columns, ids the row numbers.
    source may also be a folder holding the table file, as Kubeflow's fetch writes it: its one file, or else
    the file named as data.path's."""
    from components.kinds.table_clean import clean_table, prediction_csv
    from components.table_files import read_table

    source = table_file(source, data, "data.kind tabular")
    # No name for the table here: clean_table frees what it does not keep (memory on big tables).
    cleaned = clean_table(read_table(source, data.format, data.csv), data, cfg)
    cleaned.n_input = len(cleaned.ids) + len(cleaned.dropped)
    # meta.json has always held the image settings too (unused here): kept, so it stays the same bytes
    cleaned.settings |= {
        "target": data.target,
        "image_size": data.image_size,
        "channels": data.channels,
        "background": data.background,
        "max_image_pixels": cfg.max_image_pixels,
        "csv": prediction_csv(data, cleaned.read),
    }
    return cleaned


def table_file(source: Path, data: Data, kind: str) -> Path:
    """source itself, or, for a folder (Kubeflow's fetch writes data.path into one), its one file, or else
    the file named as data.path's. Raises UserError for a folder holding neither."""
    if not source.is_dir():
        return source
    entries = list(source.iterdir())
    files = [p for p in entries if p.is_file()]
    named = source / Path(data.path).name
    if len(files) != 1 and not named.is_file():
        raise UserError(
            f"{source}: a folder ({len(files)} files, {len(entries) - len(files)} folders), not "
            f"a table file; for {kind} set data.path to the CSV/Parquet/JSON Lines file"
        )
    return files[0] if len(files) == 1 else named


def save_clean(folder: Path, cleaned: Cleaned, labels: np.ndarray, classes: list[str]) -> None:
    """table.parquet: the feature columns, then _label (int64) and _id (the row number, as text)."""
    ids = pd.Series(cleaned.ids).astype(str)  # row numbers as text, in one vectorised cast
    with atomic_path(folder / "table.parquet") as tmp, warnings.catch_warnings():
        # a wide table is a frame of many blocks; adding two columns to it is fine, not "fragmented"
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        cleaned.features.assign(_label=labels, _id=ids).to_parquet(tmp, index=False)


def load_clean(folder: Path) -> dict:
    import pyarrow.parquet as pq

    path = folder / "table.parquet"
    rows = read_parquet(path, columns=["_id", "_label"])
    ids, labels = rows["_id"].to_numpy().astype(str), rows["_label"].to_numpy()
    features = [c for c in pq.read_schema(path).names if c not in ("_id", "_label")]
    return {"features": read_parquet(path, columns=features), "labels": labels, "ids": ids}


# ---------------------------------------------------------------- preprocessing


def fit(train: pd.DataFrame, meta: dict, params: Params) -> tuple[TablePreprocessor, list[dict]]:
    """Leave out train outliers (clean.outliers: zscore_drop), then fit the preprocessor on the train rows kept.
    meta: "numeric" and "categorical", the feature columns clean typed."""
    from components.kinds.table_preprocessing import TablePreprocessor, train_outliers

    clean, normalise = params.clean, params.normalise
    dropped = []
    if clean.outliers == "zscore_drop":
        outlier, first = train_outliers(train, meta["numeric"], clean.zscore)
        detail = f"|z| > {clean.zscore} in {{!r}}, with the train split's mean and standard deviation"
        dropped = [
            {
                "row": int(i),
                "reason": "outlier",
                "detail": detail.format(meta["numeric"][first[i]]),
                "column": meta["numeric"][first[i]],
            }
            for i in np.flatnonzero(outlier)
        ]
        train = train[~outlier].reset_index(drop=True)
    clip = clean.iqr_factor if clean.outliers == "iqr_clip" else None
    preprocessor = TablePreprocessor(meta["numeric"], meta["categorical"], normalise.numeric, clip)
    return preprocessor.fit(train), dropped


def transform(preprocessor: TablePreprocessor, raw, source: str = "input") -> np.ndarray:
    """Rows with the feature columns (a DataFrame, or what makes one) -> float32 (n, features)."""
    return preprocessor.transform(raw if isinstance(raw, pd.DataFrame) else pd.DataFrame(raw), source)


def save_preprocessing(folder: Path, preprocessor: TablePreprocessor) -> None:
    """columns.json (feature columns and settings), transformer.skops (the fitted scikit-learn transformer in
    skops' data-only format) and schema.yaml (the input contract, for people to read)."""
    from components.kinds.table_preprocessing import skops_bytes

    write_json(folder / "columns.json", preprocessor.settings())
    with atomic_path(folder / "transformer.skops") as tmp:
        tmp.write_bytes(skops_bytes(preprocessor.transformer))
    with atomic_path(folder / "schema.yaml") as tmp:
        tmp.write_text(str(preprocessor.schema.to_yaml()))  # a str: to_yaml returns None only given a stream


def load_preprocessing(folder: Path) -> TablePreprocessor:
    from components.kinds.table_preprocessing import load_transformer

    return load_transformer(folder)


# ---------------------------------------------------------------- augmentation


def augment(
    train: dict[str, np.ndarray], preprocessor: TablePreprocessor, cfg: Augment, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    return augment_table(train["x"], train["y"], preprocessor.numeric_mask(), cfg, seed)


def augment_table(
    x: np.ndarray, labels: np.ndarray, numeric: np.ndarray, cfg: Augment, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled features (n, d) -> optionally class-balanced rows, then `copies` jittered copies of them."""
    rng = np.random.default_rng(seed)
    if cfg.oversample:
        counts = np.bincount(labels)
        extra = [
            rng.choice(np.flatnonzero(labels == c), counts.max() - n, replace=True)
            for c, n in enumerate(counts)
            if 0 < n < counts.max()
        ]
        if extra:
            index = np.concatenate([np.arange(len(labels)), *extra])
            x, labels = x[index], labels[index]
    if cfg.jitter == 0 or cfg.copies == 0:
        return x, labels
    copies = np.repeat(x[None], cfg.copies, axis=0)
    copies[..., numeric] += rng.normal(0, cfg.jitter, size=copies[..., numeric].shape).astype(np.float32)
    return np.concatenate([x, *copies]), np.concatenate([labels] * (cfg.copies + 1))


def generator_space(train: dict[str, np.ndarray], preprocessor: TablePreprocessor) -> GeneratorSpace:
    """The scaled features (n, features); in generated rows each category's one-hot group gets a single 1 (its
    largest value) and the numeric features stay as generated."""

    def finish(generated: np.ndarray) -> np.ndarray:
        rows = generated.astype(np.float32, copy=True)
        for group in preprocessor.onehot_groups():
            picked = rows[:, group].argmax(1)
            rows[:, group] = 0
            rows[np.arange(len(rows)), group.start + picked] = 1
        return rows

    return GeneratorSpace(train["x"].astype(np.float32), finish)


# ---------------------------------------------------------------- network


def is_model_input(x: np.ndarray) -> bool:
    """Table rows reach the network as float features (n, features)."""
    return x.ndim == 2 and np.issubdtype(x.dtype, np.floating)


def network_config(x_shape: tuple[int, ...], classes: list[str], params: Params) -> dict:
    """The MLP, train.hidden layers, for x_shape (n, features); train.arch is for images and texts."""
    return {"arch": "mlp", "in_features": int(x_shape[1]), "hidden": list(params.train.hidden), "classes": classes}


def build_network(config: dict, params: Params | None = None) -> torch.nn.Module:
    from components.model import MLP

    return MLP(config["in_features"], len(config["classes"]), config["hidden"])


def example_lengths(x: np.ndarray, config: dict) -> np.ndarray | None:
    """None: every row has the same size."""
    return None


def signature_input(raw: pd.DataFrame) -> pd.DataFrame:
    """The rows themselves: a signature naming and typing each feature column."""
    return raw


# ---------------------------------------------------------------- batch prediction


def read_input(
    source: Path, meta: dict, preprocessor: TablePreprocessor, overrides: dict[str, str]
) -> tuple[list[str], pd.DataFrame]:
    """A table file, read with the model's CSV settings (overrides: --csv KEY=VALUE) and checked against the
    model's input contract (its schema), coerced to the logged types (an all-integer CSV column becomes
    float64, as in training): (row numbers from 0 as text, the feature columns). Errors name the file's line."""
    from components.kinds.table_preprocessing import check_schema

    table, raw = read_rows(source, preprocessor.schema, meta, overrides)
    return [str(i) for i in range(len(raw))], check_schema(preprocessor.schema, raw, str(source), where=table.where)


def request_input(inputs: list | dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows from a request (v1 `instances`: one {column: value} object per row, null for a missing value; v2:
    one tensor per column, shape (n,) or (n, 1), BYTES for text) -> a DataFrame of them, which transform checks
    against the model's schema as it checks a file. Raises UserError."""
    if isinstance(inputs, dict):
        columns = {}
        for name, values in inputs.items():
            values = np.asarray(values)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim != 1:
                raise UserError(
                    f"inputs[{name!r}]: expected one value per row, shape (n,) or (n, 1), got {values.shape}"
                )
            if values.dtype.kind in "SO":  # BYTES: category values as text
                values = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values], object)
            columns[name] = values
        if len({len(v) for v in columns.values()}) > 1:
            raise UserError(
                f"inputs: the columns have different numbers of rows ({sorted({len(v) for v in columns.values()})})"
            )
        return pd.DataFrame(columns)
    bad = next((i for i, row in enumerate(inputs) if not isinstance(row, dict)), None)
    if bad is not None:
        raise UserError(
            f"instances[{bad}]: expected an object of column: value (null for a missing value), got "
            f"{type(inputs[bad]).__name__}"
        )
    for i, row in enumerate(inputs):
        nested = next((key for key, value in row.items() if isinstance(value, (list, dict))), None)
        if nested is not None:
            raise UserError(
                f"instances[{i}][{nested!r}]: expected a number, a string or null, got {type(row[nested]).__name__}"
            )
    # a key left out of one row is a missing value there, as null is; a column absent from every row is an error
    return pd.DataFrame.from_records(inputs)


def read_rows(source: Path, schema, meta: dict, overrides: dict):
    """A table file read with the model's CSV settings (`overrides` replacing some), its columns typed as
    the model's schema says (numbers parsed with their separators and missing markers, categories
    stripped). Returns the TableFile (for line numbers) and the model's input columns. Raises UserError
    naming a missing column, or the line of a value that is not a number or is infinite."""
    from components.kinds.table_preprocessing import require_columns
    from components.table_files import Advice, read_column, read_table

    settings = csv_settings(meta.get("csv") or {}, overrides)
    table = read_table(source, None, settings, Advice(command_line=True))
    columns = list(table.frame.columns)
    if len(columns) == 1 and len(schema.columns) > 1:
        raise UserError(
            f"{source}: read as one column {columns[0][:60]!r} with the separator "
            f"{table.read.get('sep')!r} the model's training file used; pass --csv sep=... with this "
            "file's separator"
        )
    require_columns(list(schema.columns), columns, str(source))
    raw = pd.DataFrame(index=table.frame.index)
    for column, spec in schema.columns.items():
        numeric = "float" in str(spec.dtype)
        typed = read_column(
            table,
            column,
            "numeric" if numeric else "categorical",
            settings,
            table.read.get("decimal") or ".",
            advice="the model takes numbers here: fix the value, or empty the cell if it is unknown",
        )
        raw[column] = pd.Series(typed.values, index=raw.index, dtype=np.float64 if numeric else object)
        infinite = np.flatnonzero(np.isinf(raw[column].to_numpy())) if numeric else np.array([], dtype=np.intp)
        if len(infinite):
            raise UserError(
                f"{table.where(int(infinite[0]))}: column {column!r} holds infinity (or a number too "
                "large for float64); fix the value"
            )
    return table, raw


def csv_settings(saved: dict, overrides: dict):
    """The model's CSV settings with --csv KEY=VALUE overrides, checked by the same schema as data.csv.
    Values are taken as written (--csv sep=, is a comma), except null, keep_default_na's true/false and
    na_values, a comma-separated list."""
    from components.params import validate_params

    def value(key: str, text: str):
        if text == "null":
            return None
        if key == "keep_default_na":
            return text.lower() in ("true", "yes", "1")
        return text.split(",") if key == "na_values" else text

    merged = saved | {key: value(key, text) for key, text in overrides.items()}
    return validate_params({"data": {"csv": merged}}, "--csv").data.csv
