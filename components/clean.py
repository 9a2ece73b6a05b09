"""clean: read the raw data, drop what cannot be trained on, and report every dropped or changed row.

Image folders: decode every image as a viewer shows it (components/image_files.py), skip hidden files,
drop unreadable or oversized files and duplicates (by pixel hash).
Tables (CSV/Parquet, read as written: components/table_files.py): check the target and feature
columns, drop rows without a target, duplicates and rows with missing values (when asked); count
values left for the normalise stage to impute. Both: classes too small for the stratified split are
dropped (named, with their counts) or fail. reports/clean.json also says how the file was read.

    python -m components.clean --out outputs/clean --report reports/clean.json
"""
import argparse
import hashlib
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.errors import UserError, run_cli, shorten
from components.image_files import IMAGE_SUFFIXES, BadImage, TooManyPixels, decode, walk_files
from components.io import atomic_path, save_arrays, write_json
from components.params import Clean, Data, Split, load_params
from components.table_files import TableFile, read_column, read_labels, read_table

log = logging.getLogger(__name__)


@dataclass
class Cleaned:
    labels: np.ndarray                                  # class label (str) of each kept example
    ids: np.ndarray                                     # file path (images) or row number (tables)
    images: np.ndarray | None = None                    # uint8 (n, height, width, channels)
    table: pd.DataFrame | None = None                   # feature columns only
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)   # {"id", "reason", "detail"[, "column", "line"]}
    imputed: dict[str, int] = field(default_factory=dict)
    source_file: TableFile | None = None                # tables: the file read, for the line of a dropped row
    read: dict = field(default_factory=dict)            # how the file was read (tables)
    skipped: list[dict] = field(default_factory=list)   # hidden files, never read (images)
    small_classes: dict[str, int] = field(default_factory=dict)   # classes dropped as too small, with their size

    def __post_init__(self) -> None:
        # Arrays, not lists: on a table of millions of rows every drop is then one vectorised step.
        self.labels = np.asarray(self.labels, dtype=object)
        self.ids = np.asarray(self.ids)

    def keep(self, mask: np.ndarray, reason: str, detail, column: str | None = None) -> None:
        """Drop the examples where mask is False, recording why."""
        self.record(~mask, reason, detail, column)
        self.select(mask)

    def record(self, dropped: np.ndarray, reason: str, detail, column: str | None = None) -> None:
        """Report the examples where `dropped` is True as dropped; select() removes them. detail: one text for
        all, or a function of an example's label giving its own."""
        extra = {"column": column} if column else {}
        ids = self.ids[dropped]
        details = [detail(label) for label in self.labels[dropped]] if callable(detail) else [detail] * len(ids)
        lines = self.source_file.lines if self.source_file is not None and len(ids) else None   # found when needed
        if lines is None:
            self.dropped.extend({"id": str(i), "reason": reason, "detail": d} | extra for i, d in zip(ids, details))
        else:
            self.dropped.extend({"id": str(i), "line": int(lines[i]), "reason": reason, "detail": d} | extra
                                for i, d in zip(ids, details))

    def select(self, mask: np.ndarray) -> None:
        """Keep only the examples where mask is True."""
        if mask.all():              # nothing to drop: spare a copy of a table that may take gigabytes
            return
        self.labels, self.ids = self.labels[mask], self.ids[mask]
        if self.images is not None:
            self.images = self.images[mask]
        if self.table is not None:
            self.table = self.table[mask].reset_index(drop=True)

    def report(self, n_input: int) -> dict:
        by_column: dict[str, Counter] = {}
        for d in self.dropped:
            if "column" in d:
                by_column.setdefault(d["reason"], Counter())[d["column"]] += 1
        return {
            "n_input": n_input,
            "n_kept": len(self.ids),
            "n_dropped": len(self.dropped),
            "n_skipped": len(self.skipped),
            "dropped_by_reason": dict(Counter(d["reason"] for d in self.dropped)),
            "dropped_by_column": {reason: dict(counts) for reason, counts in by_column.items()},
            "imputed_by_column": self.imputed,
            "small_classes_dropped": self.small_classes,
            "kept_per_class": dict(sorted(class_counts(self.labels).items())),
            "read": self.read,
            "dropped": self.dropped,
            "skipped": self.skipped,
        }


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Examples per class, counted in one hashing pass (a Counter loops in Python over every label)."""
    counts = pd.Series(labels, dtype=object).value_counts(dropna=False, sort=False)
    return {label: int(n) for label, n in counts.items()}


def min_class_size(split: Split) -> int:
    """The fewest examples a class needs so the stratified split can put some in train, val and test."""
    return max(3, int(np.ceil(1 / min(split.val_fraction, split.test_fraction))))


def drop_small_classes(cleaned: Cleaned, cfg: Clean, split: Split, source: str) -> None:
    """Drop (and report, by class and count) or fail on the classes too small for the stratified split.
    Raises UserError when fewer than two classes are left, or when nearly every example is a class of
    its own (a continuous or identifier column given as the target)."""
    needed = min_class_size(split)
    counts = class_counts(cleaned.labels)
    if len(counts) > 50 and len(counts) > 0.5 * len(cleaned.labels):
        examples = ", ".join(shorten(c) for c in list(counts)[:3])
        raise UserError(f"{source}: the target has {len(counts)} distinct values in {len(cleaned.labels)} examples "
                        f"(e.g. {examples}): a classifier needs at least {needed} examples per class; for a table, is "
                        "data.target the column of class labels?")
    small = {c: n for c, n in counts.items() if n < needed}
    if small and cfg.small_classes == "fail":
        name, n = sorted(small.items())[0]
        raise UserError(f"{source}: class {shorten(name)} has {n} examples, too few for the stratified "
                        f"{split.val_fraction}/{split.test_fraction} val/test split (need {needed}); "
                        "add examples, remove the class, or set clean.small_classes: drop")
    if small:
        in_small = pd.Series(cleaned.labels, dtype=object).isin(list(small)).to_numpy()
        cleaned.keep(~in_small, "small_class", lambda label: f"class {shorten(label)} has {small[label]} examples, fewer "
                                                             f"than the {needed} the stratified split needs")
    cleaned.small_classes = dict(sorted(small.items()))
    classes = sorted(pd.unique(cleaned.labels))
    if len(classes) < 2:
        found = f"only class {shorten(classes[0])}" if classes else "no class"
        listed = ", ".join(f"{shorten(c)}: {n}" for c, n in sorted(small.items())[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        gone = f" ({listed}{more} dropped as too small)" if small else ""
        raise UserError(f"{source}: {found} left after cleaning{gone}; a classifier needs at least two classes")


# ---------------------------------------------------------------- image folders

def clean_images(files: list[tuple[str, str, bytes]], data: Data, cfg: Clean = Clean()) -> Cleaned:
    """files: (path, class label, file content), sorted by path. Keeps the first of each duplicate."""
    kept: list[tuple[str, str, np.ndarray]] = []
    dropped: list[dict] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for path, label, content in tqdm(files, desc="clean", unit="img", leave=False, disable=None):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            problem = {"id": path, "reason": "unsupported_file",
                       "detail": f"not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})"}
        else:
            try:
                pixels = decode(content, data.channels, data.image_size, data.background, cfg.max_image_pixels)
                problem = None
            except BadImage as exc:
                reason = "too_many_pixels" if isinstance(exc, TooManyPixels) else "unreadable"
                problem = {"id": path, "reason": reason, "detail": str(exc)}
        if problem is not None:
            if cfg.on_bad_file == "fail":
                raise UserError(f"{path}: {problem['detail']}; fix or remove the file, "
                                "or set clean.on_bad_file: drop")
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
        raise UserError(f"{data.path}: no readable images found{f' ({reasons})' if reasons else ''}; expected "
                        f"{data.path}/<class>/<image>.png")
    shapes = Counter(pixels.shape for _, _, pixels in kept)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd_path, _, odd = next(k for k in kept if k[2].shape != common)
        raise UserError(
            f"{odd_path}: image is {odd.shape[0]}x{odd.shape[1]} but most are {common[0]}x{common[1]}; "
            "set data.image_size: [height, width] in params.yaml to resize all images")
    return Cleaned(labels=[label for _, label, _ in kept], ids=[path for path, _, _ in kept],
                   images=np.stack([pixels for _, _, pixels in kept]), dropped=dropped)


def read_image_folder(root: Path, follow_symlinks: bool = False) -> tuple[list[tuple[str, str, bytes]], list[dict],
                                                                          list[dict]]:
    """All visible files under root/<class>/, sorted; files outside a class folder, symbolic links that
    lead outside root (unless follow_symlinks) and links to folders read directly are reported, not read,
    and hidden ones (.DS_Store, __MACOSX/, Thumbs.db, ...) are skipped. Returns (files as (path, class, content), strays, skipped)."""
    if not root.is_dir():
        raise UserError(f"{root}: folder not found; set data.path in params.yaml to a folder of class sub-folders")
    visible, hidden, away, aliases = walk_files(root, follow_symlinks)
    files = []
    stray = [{"id": str(path), "reason": "link_outside_folder",
              "detail": f"a symbolic link to {os.path.realpath(path)}, outside {root}: not read; copy the data in, "
                        "or set clean.follow_symlinks: true"} for path in away]
    stray += [{"id": str(path), "reason": "link_to_folder_read_directly",
               "detail": f"a symbolic link to {os.path.realpath(path)}, which is read as itself: not read twice "
                         "(its images would get two labels); remove the link, or copy the images"} for path in aliases]
    for path in visible:
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            stray.append({"id": str(path), "reason": "not_in_class_folder", "detail": "put it in <class>/"})
            continue
        try:
            files.append((str(path), relative.parts[0], path.read_bytes()))
        except OSError as exc:              # a broken symbolic link, no permission
            stray.append({"id": str(path), "reason": "unreadable", "detail": f"cannot be read ({exc.strerror})"})
    skipped = [{"id": str(path), "reason": "hidden", "detail": "hidden or made by the operating system"}
               for path in hidden]
    return files, stray, skipped


# ---------------------------------------------------------------- tables

def duplicated_rows(table: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """table.assign(_target=labels).duplicated(), in seconds on millions of rows: rows are first compared
    by a 64-bit hash of their values, and only rows whose hash repeats (the duplicates and rare hash
    collisions) by DataFrame.duplicated itself, so the answer is exactly pandas'."""
    keys = row_hashes([table[column] for column in table.columns] + [pd.Series(labels, dtype=object)])
    ordered = np.sort(keys)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    candidates = pd.Series(keys).isin(repeated).to_numpy()     # hash lookups in a set of a few values
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
            canonical = values.to_numpy() + 0.0          # a new array, with -0.0 turned into 0.0
            canonical[np.isnan(canonical)] = np.nan
            bits = canonical.view(np.uint64)
        else:
            bits = pd.factorize(values)[0].astype(np.uint64)
        keys *= np.uint64(0x100000001B3)                 # order matters: (a, b) and (b, a) differ
        keys ^= pd.util.hash_array(bits, categorize=False)
    return keys


def check_columns(table: TableFile, data: Data, cfg: Clean) -> list[str]:
    """The feature columns; a target or column setting that names no column is an error naming it."""
    columns = [str(c) for c in table.frame.columns]
    if data.target not in columns:
        hint = "set data.target"
        close = [c for c in columns if c.lower() == data.target.lower()]
        if close:
            hint = f"did you mean {shorten(close[0])}? set data.target"
        elif len(columns) == 1 and any(sep in columns[0] for sep in ",;\t|"):
            hint = f"the file was read as one column with the separator {table.read.get('sep')!r}: set data.csv.sep"
        listed = ", ".join(c if len(c) <= 40 else shorten(c, 40) for c in columns[:20])
        more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
        raise UserError(f"{table.source}: target column {shorten(data.target)} not found (columns: {listed}{more}); "
                        f"{hint}")
    features = data.features or [c for c in columns if c != data.target]
    if data.target in features:
        raise UserError(f"{table.source}: the target {data.target!r} is listed in data.features; remove it (it would "
                        "leak the label into the inputs)")
    in_file, in_features = set(columns), set(features)     # sets: a table may have 100 000 columns
    checks = (("data.features", features, in_file, "in the file"),
              ("data.categorical", data.categorical, in_features, "a feature"),
              ("data.numeric", data.numeric, in_features, "a feature"),
              ("clean.missing_by_column", list(cfg.missing_by_column), in_features, "a feature"))
    for setting, names, known, what in checks:      # a typo in params must not go unnoticed
        unknown = [c for c in names if c not in known]
        if unknown:
            raise UserError(f"{table.source}: {setting} names column {shorten(unknown[0])}, which is not {what}; "
                            "fix the name")
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
    example = counts.index[digits][int(np.argmax(unparsed))]       # one that is not a plain number, if any
    return (f"column {column!r} is read as categorical with {len(counts)} distinct values in {len(present)} rows, "
            f"nearly all holding digits (e.g. {shorten(example)}): if they are numbers, write them plainly "
            f"(or set data.csv.decimal / thousands){markers}, or list {column!r} in data.numeric to see which value "
            "fails; list it in data.categorical to silence this")


def clean_table(table: TableFile | pd.DataFrame, data: Data, cfg: Clean, source: str = "table") -> Cleaned:
    """Type, validate and clean a table read by table_files.read_table (or a DataFrame, named `source`);
    rows are identified by their 0-based position, and messages name the file's line."""
    if isinstance(table, pd.DataFrame):
        table = TableFile.from_frame(table, source)
    where = table.where
    features = check_columns(table, data, cfg)
    labels, labels_stripped = read_labels(table.frame[data.target])
    if not pd.notna(labels).any():
        raise UserError(f"{table.source}: target column {data.target!r} has no values; fill it, or set data.target to "
                        "the column that holds the class labels")
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
            raise UserError(f"{table.source}: column {shorten(column)} is entirely empty; fill it or leave it out of "
                            "data.features")
        # float64 numbers are kept as they are (often a view of the file's column: no copy)
        columns[column] = (np.asarray(values, dtype=np.float64) if typed[column].numeric
                           else pd.Series(values, index=table.frame.index, dtype=object))
        typed[column].values = None
    frame = pd.DataFrame(columns, index=table.frame.index, copy=False)
    del columns
    numeric = [c for c in features if typed[c].numeric]
    categorical = [c for c in features if not typed[c].numeric]
    cleaned = Cleaned(labels=labels, ids=np.arange(len(frame)), table=frame, numeric=numeric,
                      categorical=categorical, source_file=table, read=dict(table.read))
    cleaned.read["thousands_by_column"] = {c: t.thousands for c, t in typed.items() if t.thousands}
    cleaned.read["missing_markers_by_column"] = {c: t.markers for c, t in typed.items() if t.markers}
    stripped = {c: t.stripped for c, t in typed.items() if t.stripped}
    labels_report = {data.target: labels_stripped} if labels_stripped else {}
    cleaned.read["whitespace_stripped_by_column"] = labels_report | stripped
    cleaned.read["warnings"] = [f"column {c!r} holds dates and times, read as categories (one per distinct value): "
                                "derive features from it (month, day of week, ...) or leave it out of data.features"
                                for c in dates]
    cleaned.read["warnings"] += [warning for c in categorical
                                 if c not in dates and (warning := numbers_read_as_text(frame[c], c, data))]
    for warning in cleaned.read["warnings"]:
        log.warning("%s: %s", table.source, warning)
    # From here on `cleaned` holds what is kept: these names would keep the unfiltered table (and its
    # target column) in memory after the first drop. The caller hands the table over for that reason.
    table.frame = None
    del frame, labels

    # Both drops at once, so a big table is copied once: a row without a target is never a duplicate of
    # one with a target (their labels differ), so duplicates can be found before those rows go.
    has_target = pd.notna(cleaned.labels)
    duplicate = duplicated_rows(cleaned.table, cleaned.labels) & has_target
    cleaned.record(~has_target, "missing_target", f"no value in {data.target!r}", data.target)
    cleaned.record(duplicate, "duplicate", "same values as an earlier row")
    cleaned.select(has_target & ~duplicate)

    for column in numeric:
        infinite = np.isinf(cleaned.table[column].to_numpy())
        if infinite.any():
            row = int(cleaned.ids[int(np.flatnonzero(infinite)[0])])
            raise UserError(f"{where(row)}: column {shorten(column)} holds infinity; fix the value or drop the row")
    strategy = {column: cfg.missing_by_column.get(column, cfg.missing) for column in features}
    for column in features:             # fail and drop first, so the counts below are of rows kept
        absent = cleaned.table[column].isna().to_numpy()
        if absent.any() and strategy[column] == "fail":
            row = int(cleaned.ids[int(np.flatnonzero(absent)[0])])
            raise UserError(f"{where(row)}: column {shorten(column)} has no value; fill it, or set clean.missing "
                            f"(or clean.missing_by_column.{column}) to impute or drop")
        if absent.any() and strategy[column] == "drop":
            cleaned.keep(~absent, "missing_value", f"no value in {column!r}", column)
    for column in features:
        absent = int(cleaned.table[column].isna().sum())
        if absent and strategy[column] == "impute":
            cleaned.imputed[column] = absent        # imputed by normalise, with train statistics
    return cleaned


# ---------------------------------------------------------------- stage

def clean_dataset(data: Data, cfg: Clean, split: Split, out_dir: Path, report_path: Path,
                  root: Path | None = None) -> dict:
    """Read data.path (or root), clean it, write out_dir/{meta.json, images.npz | table.parquet} and the report."""
    source = root or Path(data.path)
    if data.kind == "image_folder":
        files, stray, skipped = read_image_folder(source, cfg.follow_symlinks)
        unreadable = [s for s in stray if s["reason"] == "unreadable"]
        if unreadable and cfg.on_bad_file == "fail":
            raise UserError(f"{unreadable[0]['id']}: {unreadable[0]['detail']}; fix or remove the file, or set "
                            "clean.on_bad_file: drop")
        cleaned = clean_images(files, data, cfg)
        cleaned.dropped[:0] = stray
        cleaned.skipped = skipped
        n_input = len(files) + len(stray)
    else:
        # No name for the table here: clean_table frees what it does not keep (memory on big tables).
        cleaned = clean_table(read_table(source, data.format, data.csv), data, cfg)
        n_input = len(cleaned.ids) + len(cleaned.dropped)
    drop_small_classes(cleaned, cfg, split, str(source))

    classes = sorted(pd.unique(cleaned.labels))
    labels = pd.Index(classes, dtype=object).get_indexer(cleaned.labels).astype(np.int64)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cleaned.images is not None:
        save_arrays(out_dir / "images.npz", images=cleaned.images, labels=labels, classes=np.array(classes),
                    ids=cleaned.ids)
    else:
        ids = pd.Series(cleaned.ids).astype(str)          # row numbers as text, in one vectorised cast
        with atomic_path(out_dir / "table.parquet") as tmp, warnings.catch_warnings():
            # a wide table is a frame of many blocks; adding two columns to it is fine, not "fragmented"
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            cleaned.table.assign(_label=labels, _id=ids).to_parquet(tmp, index=False)
    write_json(out_dir / "meta.json", {"kind": data.kind, "classes": classes, "numeric": cleaned.numeric,
                                       "categorical": cleaned.categorical, "target": data.target,
                                       "image_size": data.image_size, "channels": data.channels,
                                       "background": data.background, "max_image_pixels": cfg.max_image_pixels,
                                       "csv": prediction_csv(data, cleaned.read)})
    report = cleaned.report(n_input)
    write_json(report_path, report)
    log.info("kept %d of %d; dropped %s", report["n_kept"], n_input, report["dropped_by_reason"] or "none")
    return report


def prediction_csv(data: Data, read: dict) -> dict:
    """The data.csv settings batch prediction reads new files with: as configured, with the separator and
    decimal mark this file turned out to use pinned (a new file of a few rows is too little to detect them)."""
    settings = data.csv.model_dump(mode="json")
    if read.get("format") == "csv":
        settings |= {"sep": read["sep"], "decimal": read["decimal"]}
    return settings


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Read, validate and clean the raw data; report every drop.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, help="overrides data.path")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    clean_dataset(params.data, params.clean, params.split, args.out, args.report, args.data)


if __name__ == "__main__":
    run_cli(main)
