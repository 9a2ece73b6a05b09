"""clean: read the raw data, drop what cannot be trained on, and report every dropped or changed row.

Image folders: decode every image, drop unreadable files and duplicates (by pixel hash).
Tables (CSV/Parquet): check the target and feature columns, drop rows without a target, duplicates,
rows with missing values (when asked), z-score outliers (when asked); count values left for the
normalise stage to impute. Both: classes too small for the stratified split are dropped or fail.

    python -m components.clean --out outputs/clean --report reports/clean.json
"""
import argparse
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from kfp.dsl import Artifact, Dataset, Input, Output

from components.errors import UserError, run_cli
from components.io import atomic_path, read_parquet, save_arrays, write_json
from components.params import Clean, Data, Split, load_params

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Cleaned:
    labels: np.ndarray                                  # class label (str) of each kept example
    ids: np.ndarray                                     # file path (images) or row number (tables)
    images: np.ndarray | None = None                    # uint8 (n, height, width, channels)
    table: pd.DataFrame | None = None                   # feature columns only
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)   # {"id", "reason", "detail"[, "column"]}
    imputed: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Arrays, not lists: on a table of millions of rows every drop is then one vectorised step.
        self.labels = np.asarray(self.labels, dtype=object)
        self.ids = np.asarray(self.ids)

    def keep(self, mask: np.ndarray, reason: str, detail: str, column: str | None = None) -> None:
        """Drop the examples where mask is False, recording why."""
        self.record(~mask, reason, detail, column)
        self.select(mask)

    def record(self, dropped: np.ndarray, reason: str, detail: str, column: str | None = None) -> None:
        """Report the examples where `dropped` is True as dropped; select() removes them."""
        extra = {"column": column} if column else {}
        self.dropped.extend({"id": str(i), "reason": reason, "detail": detail} | extra for i in self.ids[dropped])

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
            "dropped_by_reason": dict(Counter(d["reason"] for d in self.dropped)),
            "dropped_by_column": {reason: dict(counts) for reason, counts in by_column.items()},
            "imputed_by_column": self.imputed,
            "kept_per_class": dict(sorted(class_counts(self.labels).items())),
            "dropped": self.dropped,
        }


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Examples per class, counted in one hashing pass (a Counter loops in Python over every label)."""
    counts = pd.Series(labels, dtype=object).value_counts(dropna=False, sort=False)
    return {label: int(n) for label, n in counts.items()}


def min_class_size(split: Split) -> int:
    """The fewest examples a class needs so the stratified split can put some in train, val and test."""
    return max(3, int(np.ceil(1 / min(split.val_fraction, split.test_fraction))))


def drop_small_classes(cleaned: Cleaned, cfg: Clean, split: Split, source: str) -> None:
    needed = min_class_size(split)
    small = {c: n for c, n in class_counts(cleaned.labels).items() if n < needed}
    if small and cfg.small_classes == "fail":
        name, n = sorted(small.items())[0]
        raise UserError(f"{source}: class {name!r} has {n} examples, too few for the stratified "
                        f"{split.val_fraction}/{split.test_fraction} val/test split (need {needed}); "
                        "add examples, remove the class, or set clean.small_classes: drop")
    if small:
        cleaned.keep(~pd.Series(cleaned.labels, dtype=object).isin(list(small)).to_numpy(), "small_class",
                      f"class has fewer than {needed} examples")
    classes = sorted(pd.unique(cleaned.labels))
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no class"
        raise UserError(f"{source}: {found} left after cleaning; a classifier needs at least two classes")


# ---------------------------------------------------------------- image folders

def decode(content: bytes, data: Data) -> np.ndarray:
    """Bytes of one image file -> uint8 (height, width, channels) in the configured mode and size."""
    with Image.open(io.BytesIO(content)) as image:
        image = ImageOps.exif_transpose(image)          # camera photos: apply the EXIF rotation
        if image.mode.startswith("I"):                   # 16-bit grey: scale 0..65535 to 0..255, do not clip
            wide = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8), mode="L")
        image = image.convert("L" if data.channels == 1 else "RGB")
        if data.image_size is not None:
            height, width = data.image_size
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def clean_images(files: list[tuple[str, str, bytes]], data: Data, cfg: Clean = Clean()) -> Cleaned:
    """files: (path, class label, file content), sorted by path. Keeps the first of each duplicate."""
    kept: list[tuple[str, str, np.ndarray]] = []
    dropped: list[dict] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for path, label, content in tqdm(files, desc="clean", unit="img", leave=False, disable=None):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            problem = {"id": path, "reason": "unsupported_file", "detail": "not a PNG/JPEG/BMP file"}
        else:
            try:
                pixels = decode(content, data)
                problem = None
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                problem = {"id": path, "reason": "unreadable", "detail": str(exc).splitlines()[0]}
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
                detail += f" (labelled {original_label!r} there, {label!r} here)"
            dropped.append({"id": path, "reason": "duplicate", "detail": detail})
            continue
        first_seen[digest] = (path, label)
        kept.append((path, label, pixels))

    if not kept:
        raise UserError(f"{data.path}: no readable images found; expected {data.path}/<class>/<image>.png")
    shapes = Counter(pixels.shape for _, _, pixels in kept)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd_path, _, odd = next(k for k in kept if k[2].shape != common)
        raise UserError(
            f"{odd_path}: image is {odd.shape[0]}x{odd.shape[1]} but most are {common[0]}x{common[1]}; "
            "set data.image_size: [height, width] in params.yaml to resize all images")
    return Cleaned(labels=[label for _, label, _ in kept], ids=[path for path, _, _ in kept],
                   images=np.stack([pixels for _, _, pixels in kept]), dropped=dropped)


def read_image_folder(root: Path) -> tuple[list[tuple[str, str, bytes]], list[dict]]:
    """All files under root/<class>/, sorted; files outside a class folder are reported, not read."""
    if not root.is_dir():
        raise UserError(f"{root}: folder not found; set data.path in params.yaml to a folder of class sub-folders")
    files, stray = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            stray.append({"id": str(path), "reason": "not_in_class_folder", "detail": "put it in <class>/"})
            continue
        files.append((str(path), relative.parts[0], path.read_bytes()))
    return files, stray


# ---------------------------------------------------------------- tables

def as_label(value) -> str | None:
    """A category or class value as text, the same however the file typed it: 3, 3.0 and "3" -> "3"."""
    if pd.isna(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# infer_dtype kinds whose distinct values factorize into the same groups as as_label gives them labels;
# in other object columns 1, 1.0 and True are one value to factorize but "1", "1" and "True" to as_label.
FACTORIZE_SAFE = {"string", "integer", "floating", "mixed-integer-float", "boolean", "empty"}


def as_labels(values: pd.Series) -> np.ndarray:
    """as_label of every value, as an object array (None where missing). Each distinct value is
    converted once, so a column of millions of rows costs one factorize, not millions of Python calls."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in FACTORIZE_SAFE:
        return np.array([as_label(v) for v in values], dtype=object)
    codes, uniques = pd.factorize(values)
    names = np.array([as_label(u) for u in uniques] + [None], dtype=object)
    return names[codes]                 # missing values have code -1: the None at the end


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


def table_format(path: Path, fmt: str | None) -> str | None:
    return fmt or TABLE_FORMATS.get(path.suffix.lower())


def read_table(path: Path, fmt: str | None) -> pd.DataFrame:
    """CSV or Parquet, by data.format or the extension; every failure names the file."""
    fmt = table_format(path, fmt)
    if fmt is None:
        raise UserError(f"{path}: unknown format {path.suffix or '(no extension)'!r}; use a .csv or .parquet file "
                        "or set data.format")
    if not path.is_file():
        raise UserError(f"{path}: file not found; set data.path in params.yaml")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty; export the table again")
    try:
        table = pd.read_csv(path) if fmt == "csv" else read_parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: file is empty; export the table again") from None
    except Exception as exc:  # noqa: BLE001 - parsers raise many types; all mean "cannot read this file"
        raise UserError(f"{path}: cannot be read as {fmt.upper()} ({str(exc).splitlines()[0][:120]}); "
                        "check the file or set data.format") from None
    if table.empty:
        raise UserError(f"{path}: no data rows; export the table again")
    return table


def column_types(table: pd.DataFrame, features: list[str], data: Data, where) -> tuple[list[str], list[str]]:
    """Split features into numeric and categorical; a numeric column holding text is an error."""
    numeric, categorical = [], []
    for column in features:
        values = table[column]
        if values.isna().all():
            raise UserError(f"{where(None)}: column {column!r} is entirely empty; fill it or leave it out of "
                            "data.features")
        if column in data.categorical or pd.api.types.is_bool_dtype(values):
            categorical.append(column)
            continue
        if pd.api.types.is_numeric_dtype(values):
            numeric.append(column)
            continue
        present = values.dropna()
        parsed = pd.to_numeric(present, errors="coerce")
        if column in data.numeric or parsed.notna().mean() >= 0.9:   # mostly numbers: the rest are typos
            bad = present.index[parsed.isna()]
            if len(bad):
                raise UserError(f"{where(bad[0])}: column {column!r} holds {present[bad[0]]!r}, not a number; "
                                f"fix the value or list {column!r} in data.categorical")
            numeric.append(column)
        else:
            categorical.append(column)
    return numeric, categorical


def clean_table(table: pd.DataFrame, data: Data, cfg: Clean, source: str) -> Cleaned:
    """Validate and clean a table; rows are identified by their 0-based position in the file."""
    is_csv = table_format(Path(source), data.format) == "csv"

    def where(row) -> str:
        return source if row is None else f"{source} {'line ' + str(row + 2) if is_csv else 'row ' + str(row)}"

    if data.target not in table.columns:
        raise UserError(f"{source}: target column {data.target!r} not found (columns: {', '.join(map(str, table.columns))}); "
                        "set data.target")
    features = data.features or [c for c in table.columns if c != data.target]
    if data.target in features:
        raise UserError(f"{source}: the target {data.target!r} is listed in data.features; remove it (it would leak "
                        "the label into the inputs)")
    checks = (("data.features", features, list(table.columns), "in the file"),
              ("data.categorical", data.categorical, features, "a feature"),
              ("data.numeric", data.numeric, features, "a feature"),
              ("clean.missing_by_column", list(cfg.missing_by_column), features, "a feature"))
    for setting, names, known, what in checks:      # a typo in params must not go unnoticed
        unknown = [c for c in names if c not in known]
        if unknown:
            raise UserError(f"{source}: {setting} names column {unknown[0]!r}, which is not {what}; fix the name")
    numeric, categorical = column_types(table, features, data, where)
    frame = table[features].copy(deep=False)     # columns are replaced below, never written into
    for column in numeric:
        if frame[column].dtype != np.float64:       # most are already: converting would copy them
            frame[column] = pd.to_numeric(frame[column]).astype("float64")
    for column in categorical:
        frame[column] = pd.Series(as_labels(frame[column]), index=frame.index).astype("object")
    cleaned = Cleaned(labels=as_labels(table[data.target]), ids=np.arange(len(frame)), table=frame,
                      numeric=numeric, categorical=categorical)
    # From here on `cleaned` holds what is kept: these names would keep the unfiltered table (and its
    # target column) in memory after the first drop. The caller hands the table over for that reason.
    del table, frame

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
            raise UserError(f"{where(row)}: column {column!r} holds infinity; fix the value or drop the row")
    strategy = {column: cfg.missing_by_column.get(column, cfg.missing) for column in features}
    for column in features:             # fail and drop first, so the counts below are of rows kept
        absent = cleaned.table[column].isna().to_numpy()
        if absent.any() and strategy[column] == "fail":
            row = int(cleaned.ids[int(np.flatnonzero(absent)[0])])
            raise UserError(f"{where(row)}: column {column!r} has no value; fill it, or set clean.missing "
                            f"(or clean.missing_by_column.{column}) to impute or drop")
        if absent.any() and strategy[column] == "drop":
            cleaned.keep(~absent, "missing_value", f"no value in {column!r}", column)
    for column in features:
        absent = int(cleaned.table[column].isna().sum())
        if absent and strategy[column] == "impute":
            cleaned.imputed[column] = absent        # imputed by normalise, with train statistics

    if cfg.outliers == "zscore_drop":
        for column in numeric:
            values = cleaned.table[column]
            z = ((values - values.mean()) / (values.std(ddof=0) or 1)).abs()
            cleaned.keep(~(z > cfg.zscore).to_numpy(), "outlier", f"|z| > {cfg.zscore} in {column!r}", column)
    return cleaned


# ---------------------------------------------------------------- stage

def clean_dataset(data: Data, cfg: Clean, split: Split, out_dir: Path, report_path: Path,
                  root: Path | None = None) -> dict:
    """Read data.path (or root), clean it, write out_dir/{meta.json, images.npz | table.parquet} and the report."""
    source = root or Path(data.path)
    if data.kind == "image_folder":
        files, stray = read_image_folder(source)
        cleaned = clean_images(files, data, cfg)
        cleaned.dropped[:0] = stray
        n_input = len(files) + len(stray)
    else:
        # No name for the table here: clean_table frees what it does not keep (memory on big tables).
        cleaned = clean_table(read_table(source, data.format), data, cfg, str(source))
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
        with atomic_path(out_dir / "table.parquet") as tmp:
            cleaned.table.assign(_label=labels, _id=ids).to_parquet(tmp, index=False)
    write_json(out_dir / "meta.json", {"kind": data.kind, "classes": classes, "numeric": cleaned.numeric,
                                       "categorical": cleaned.categorical, "target": data.target,
                                       "image_size": data.image_size, "channels": data.channels})
    report = cleaned.report(n_input)
    write_json(report_path, report)
    log.info("kept %d of %d; dropped %s", report["n_kept"], n_input, report["dropped_by_reason"] or "none")
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Read, validate and clean the raw data; report every drop.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, help="overrides data.path")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    clean_dataset(params.data, params.clean, params.split, args.out, args.report, args.data)


def clean_step(raw: Input[Dataset], data: dict, clean_cfg: dict, split: dict, clean: Output[Dataset],
               report: Output[Artifact]):
    """Kubeflow: the same stage on the fetched data (a folder, or a folder holding the table file)."""
    from pathlib import Path
    from components.clean import clean_dataset
    from components.params import Params
    params = Params.model_validate({"data": data, "clean": clean_cfg, "split": split})
    source = Path(raw.path)
    if params.data.kind == "tabular" and source.is_dir():      # fetch put the one table file in a folder
        files = [p for p in source.iterdir() if p.is_file()]
        source = files[0] if len(files) == 1 else source / Path(params.data.path).name
    clean_dataset(params.data, params.clean, params.split, Path(clean.path), Path(report.path), source)


if __name__ == "__main__":
    run_cli(main)
