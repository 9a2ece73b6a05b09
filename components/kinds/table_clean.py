"""Cleaning a table (data.kind tabular): typed feature columns, the target checked, rows without a target,
duplicates and rows with missing values (when asked) dropped, values left for normalise to impute counted.
The file itself is read as written by components/table_files.py."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from components.errors import UserError, shorten
from components.kinds.base import Cleaned
from components.params import Clean, Data
from components.table_files import TableFile, read_column, read_labels

log = logging.getLogger(__name__)


def duplicated_rows(table: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """table.assign(_target=labels).duplicated(), in seconds on millions of rows: rows are first compared
    by a 64-bit hash of their values, and only rows whose hash repeats (the duplicates and rare hash
    collisions) by DataFrame.duplicated itself, so the answer is exactly pandas'."""
    keys = row_hashes([table[column] for column in table.columns] + [pd.Series(labels, dtype=object)])
    ordered = np.sort(keys)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    candidates = pd.Series(keys).isin(repeated).to_numpy()  # hash lookups in a set of a few values
    duplicated = np.zeros(len(table), dtype=bool)
    if candidates.any():
        subset = table[candidates].assign(_target=labels[candidates])
        duplicated[candidates] = subset.duplicated().to_numpy()
    return duplicated


def row_hashes(columns: list[pd.Series]) -> np.ndarray:
    """A uint64 per row that is equal for rows that DataFrame.duplicated calls equal. Floats are hashed by
    their bits, with -0.0 and every NaN made one value as pandas compares them; other columns by their
    factorize codes, which are what duplicated compares."""
    keys = np.zeros(len(columns[0]) if columns else 0, dtype=np.uint64)
    for values in columns:
        if values.dtype == np.float64:
            canonical = values.to_numpy() + 0.0  # a new array, with -0.0 turned into 0.0
            canonical[np.isnan(canonical)] = np.nan
            bits = canonical.view(np.uint64)
        else:
            bits = pd.factorize(values)[0].astype(np.uint64)
        keys *= np.uint64(0x100000001B3)  # order matters: (a, b) and (b, a) differ
        keys ^= pd.util.hash_array(bits, categorize=False)
    return keys


def check_columns(table: TableFile, data: Data, cfg: Clean) -> list[str]:
    """The feature columns; a target or column setting that names no column is an error naming it."""
    columns = [str(c) for c in table.frame.columns]
    if data.target not in columns:
        hint = "set data.target"
        close = [c for c in columns if c.lower() == str(data.target).lower()]
        if close:
            hint = f"did you mean {shorten(close[0])}? set data.target"
        elif len(columns) == 1 and any(sep in columns[0] for sep in ",;\t|"):
            hint = f"the file was read as one column with the separator {table.read.get('sep')!r}: set data.csv.sep"
        listed = ", ".join(c if len(c) <= 40 else shorten(c, 40) for c in columns[:20])
        more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
        raise UserError(
            f"{table.source}: target column {shorten(data.target)} not found (columns: {listed}{more}); {hint}"
        )
    features = data.features or [c for c in columns if c != data.target]
    if data.target in features:
        raise UserError(
            f"{table.source}: the target {data.target!r} is listed in data.features; remove it (it would "
            "leak the label into the inputs)"
        )
    in_file, in_features = set(columns), set(features)  # sets: a table may have 100 000 columns
    checks = (
        ("data.features", features, in_file, "in the file"),
        ("data.categorical", data.categorical, in_features, "a feature"),
        ("data.numeric", data.numeric, in_features, "a feature"),
        ("clean.missing_by_column", list(cfg.missing_by_column), in_features, "a feature"),
    )
    for setting, names, known, what in checks:  # a typo in params must not go unnoticed
        unknown = [c for c in names if c not in known]
        if unknown:
            raise UserError(
                f"{table.source}: {setting} names column {shorten(unknown[0])}, which is not {what}; fix the name"
            )
    return features


def numbers_read_as_text(values: pd.Series, column: str, data: Data) -> str | None:
    """A warning for a categorical column that looks like numbers in a format not recognised ("45%",
    "$1,200", "12 kg"): nearly every value holds a digit and nearly every value is distinct, so one-hot
    encoding would give a feature per row. None when the column was listed in data.categorical."""
    present = values.dropna()
    if column in data.categorical or len(present) < 20:
        return None
    counts = present.astype(str).value_counts()
    digits = counts.index.str.contains(r"\d", regex=True)
    if len(counts) < 0.5 * len(present) or digits.mean() < 0.9:
        return None
    words = ", ".join(f"{shorten(value)} ({n} rows)" for value, n in counts[~digits].head(3).items())
    markers = f", add {words} to data.csv.na_values if they mark missing values" if words else ""
    unparsed = pd.to_numeric(pd.Series(counts.index[digits]), errors="coerce").isna().to_numpy()
    example = counts.index[digits][int(np.argmax(unparsed))]  # one that is not a plain number, if any
    return (
        f"column {column!r} is read as categorical with {len(counts)} distinct values in {len(present)} rows, "
        f"nearly all holding digits (e.g. {shorten(example)}): if they are numbers, write them plainly "
        f"(or set data.csv.decimal / thousands){markers}, or list {column!r} in data.numeric to see which value "
        "fails; list it in data.categorical to silence this"
    )


def clean_table(table: TableFile | pd.DataFrame, data: Data, cfg: Clean, source: str = "table") -> Cleaned:
    """Type, validate and clean a table read by table_files.read_table (or a DataFrame, named `source`);
    rows are identified by their 0-based position, and messages name the file's line. The features are the
    typed feature columns (numbers float64, categories object); settings has their "numeric" and
    "categorical" names."""
    if isinstance(table, pd.DataFrame):
        table = TableFile.from_frame(table, source)
    where = table.where
    features = check_columns(table, data, cfg)
    labels, labels_stripped = read_labels(table.frame[data.target])
    if not pd.notna(labels).any():
        raise UserError(
            f"{table.source}: target column {data.target!r} has no values; fill it, or set data.target to "
            "the column that holds the class labels"
        )
    decimal = table.read.get("decimal") or "."
    as_category, as_number = set(data.categorical), set(data.numeric)
    dates = [c for c in features if pd.api.types.is_datetime64_any_dtype(table.frame[c]) and c not in as_category]
    # The typed columns are gathered and made into a frame once: replacing the columns of a frame one by
    # one costs time in proportion to its width each time (minutes on a table of 100 000 columns).
    typed, columns = {}, {}
    for column in features:
        role = "categorical" if column in as_category else "numeric" if column in as_number else None
        typed[column] = read_column(table, column, role, data.csv, decimal)
        values = typed[column].values
        if not pd.notna(values).any():
            raise UserError(
                f"{table.source}: column {shorten(column)} is entirely empty; fill it or leave it out of data.features"
            )
        # float64 numbers are kept as they are (often a view of the file's column: no copy)
        columns[column] = (
            np.asarray(values, dtype=np.float64)
            if typed[column].numeric
            else pd.Series(values, index=table.frame.index, dtype=object)
        )
        typed[column].values = None
    frame = pd.DataFrame(columns, index=table.frame.index, copy=False)
    del columns
    numeric = [c for c in features if typed[c].numeric]
    categorical = [c for c in features if not typed[c].numeric]
    cleaned = Cleaned(
        labels=labels,
        ids=np.arange(len(frame)),
        features=frame,
        settings={"numeric": numeric, "categorical": categorical},
        source_file=table,
        read=dict(table.read),
    )
    cleaned.read["thousands_by_column"] = {c: t.thousands for c, t in typed.items() if t.thousands}
    cleaned.read["missing_markers_by_column"] = {c: t.markers for c, t in typed.items() if t.markers}
    stripped = {c: t.stripped for c, t in typed.items() if t.stripped}
    labels_report = {data.target: labels_stripped} if labels_stripped else {}
    cleaned.read["whitespace_stripped_by_column"] = labels_report | stripped
    cleaned.read["warnings"] = [
        f"column {c!r} holds dates and times, read as categories (one per distinct value): "
        "derive features from it (month, day of week, ...) or leave it out of data.features"
        for c in dates
    ]
    cleaned.read["warnings"] += [
        warning for c in categorical if c not in dates and (warning := numbers_read_as_text(frame[c], c, data))
    ]
    for warning in cleaned.read["warnings"]:
        log.warning("%s: %s", table.source, warning)
    # From here on `cleaned` holds what is kept: these names would keep the unfiltered table (and its
    # target column) in memory after the first drop. The caller hands the table over for that reason.
    table.frame = None
    del frame, labels

    # Both drops at once, so a big table is copied once: a row without a target is never a duplicate of
    # one with a target (their labels differ), so duplicates can be found before those rows go.
    has_target = pd.notna(cleaned.labels)
    duplicate = duplicated_rows(cleaned.features, cleaned.labels) & has_target
    cleaned.record(~has_target, "missing_target", f"no value in {data.target!r}", data.target)
    cleaned.record(duplicate, "duplicate", "same values as an earlier row")
    cleaned.select(has_target & ~duplicate)

    for column in numeric:
        infinite = np.isinf(cleaned.features[column].to_numpy())
        if infinite.any():
            row = int(cleaned.ids[int(np.flatnonzero(infinite)[0])])
            raise UserError(f"{where(row)}: column {shorten(column)} holds infinity; fix the value or drop the row")
    strategy = {column: cfg.missing_by_column.get(column, cfg.missing) for column in features}
    for column in features:  # fail and drop first, so the counts below are of rows kept
        absent = cleaned.features[column].isna().to_numpy()
        if absent.any() and strategy[column] == "fail":
            row = int(cleaned.ids[int(np.flatnonzero(absent)[0])])
            raise UserError(
                f"{where(row)}: column {shorten(column)} has no value; fill it, or set clean.missing "
                f"(or clean.missing_by_column.{column}) to impute or drop"
            )
        if absent.any() and strategy[column] == "drop":
            cleaned.keep(~absent, "missing_value", f"no value in {column!r}", column)
    for column in features:
        absent = int(cleaned.features[column].isna().sum())
        if absent and strategy[column] == "impute":
            cleaned.imputed[column] = absent  # imputed by normalise, with train statistics
    return cleaned


def prediction_csv(data: Data, read: dict) -> dict:
    """The data.csv settings batch prediction reads new files with: as configured, with the separator and
    decimal mark this file turned out to use pinned (a new file of a few rows is too little to detect them)."""
    settings = data.csv.model_dump(mode="json")
    if read.get("format") == "csv":
        settings |= {"sep": read["sep"], "decimal": read["decimal"]}
    return settings
