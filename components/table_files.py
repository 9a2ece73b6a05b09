"""Table files read as their authors wrote them, for training (clean) and prediction alike.

CSV and TSV: the encoding (UTF-8 with or without a BOM, UTF-16 with its BOM), the separator and the
decimal mark are detected unless `data.csv` sets them; the header must name every column once; every
row is traced to the physical line of the file (what `grep -n` and editors show), including after
quoted fields that span lines; a row with more or fewer fields than the header is an error. Parquet:
read as typed.

Columns: the target is always text (`NA`, `None`, `1.0`, `2024-01-05` are labels spelled as written;
only an empty cell is a missing label). A feature column is numeric when its values are numbers
(thousands separators detected per column) apart from missing-value markers; placeholders made of
punctuation only (`-`, `--`, `?`, `.`, `—`) count as missing in numeric columns. Surrounding whitespace
is stripped from labels and categories. Everything detected or changed is returned for the report.
"""

from __future__ import annotations

import array
import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import UserError, shorten
from components.io import read_parquet
from components.params import Csv

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
# pandas.read_csv's default missing-value markers (its `na_values` docs), matched in any letter case.
# They apply to feature columns only: a label is never missing unless its cell is empty.
DEFAULT_NA_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
SEPARATORS = (",", ";", "\t", "|")
# Thousands separators tried per column, by decimal mark: comma, apostrophe (Swiss), spaces (French, ISO).
THOUSANDS = {".": (",", "'", " ", "\u00a0", "\u202f"), ",": (".", " ", "\u00a0", "\u202f", "'")}
SAMPLE_BYTES = 1 << 16  # read to detect the encoding and separator
PLACEHOLDER = r"[^\w\s]+"  # punctuation only: "-", "--", "?", ".", "—" mark a missing number
NUMERIC_SHARE = 0.9  # a column this much numbers (markers aside) is numeric; the rest are typos
# A number in groups of three digits, the first group without a leading zero (0.125 is never 125).
GROUPED = r"[+-]?[1-9]\d{{0,2}}(?:{sep}\d{{3}})+(?:{decimal}\d*)?"


@dataclass(frozen=True)
class Advice:
    """Where a reading setting is changed, for messages: params.yaml (training, the default), or the
    --csv option of batch prediction, which reads new files with the model's settings."""

    command_line: bool = False

    def setting(self, key: str, value: str | None = None) -> str:
        """'set data.csv.sep' / "set data.csv.comment: '#'", or 'pass --csv sep=...'."""
        if self.command_line:
            return f"pass --csv {key}={'...' if value is None else value}"
        return f"set data.csv.{key}" + ("" if value is None else f": {value!r}")

    def source(self) -> str:
        return "check --input" if self.command_line else "set data.path in params.yaml"

    def format(self) -> str:
        return "rename it" if self.command_line else "set data.format"


IN_PARAMS = Advice()


@dataclass
class TableFile:
    """A table as read from `source`: raw cells (text for CSV, typed for Parquet), how it was read,
    and, for CSV, the physical line of each row, found by a second pass over the file the first time a
    message or a report needs one."""

    frame: pd.DataFrame
    source: str
    read: dict = field(default_factory=dict)  # format and settings used, "detected": which were guessed
    find_lines: Callable[[], np.ndarray] | None = None
    advice: Advice = IN_PARAMS
    _lines: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.n_rows = len(self.frame)

    @property
    def lines(self) -> np.ndarray | None:
        """int64 (n_rows,): the 1-based line where each row starts; None where rows have no lines."""
        if self._lines is None and self.find_lines is not None:
            lines, self.find_lines = self.find_lines(), None
            # a file the csv module splits otherwise than Arrow did (odd quoting): rows are named by position
            self._lines = lines if len(lines) == self.n_rows else None
        return self._lines

    def where(self, row: int | None) -> str:
        """'data/t.csv line 62' for a row (0-based position in the frame); the file alone for None."""
        if row is None:
            return self.source
        if self.lines is not None:
            return f"{self.source} line {int(self.lines[row])}"
        return f"{self.source} row {row}"

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str) -> TableFile:
        """A DataFrame built in memory (no file, so rows are named by position)."""
        return cls(frame, source, {"format": "dataframe"})


# Python's csv module refuses a field over 128 KiB ("field larger than field limit"); a long cell is data
# like any other (a message quotes at most 80 characters of it: errors.shorten).
csv.field_size_limit(2**31 - 1)


def table_format(path: Path, fmt: str | None) -> str | None:
    return fmt or TABLE_FORMATS.get(path.suffix.lower())


def read_table(path: Path, fmt: str | None = None, settings: Csv = Csv(), advice: Advice = IN_PARAMS) -> TableFile:
    """Read a CSV/TSV or Parquet file (by `fmt` or the extension). Raises UserError naming the file and,
    where it applies, the line and the setting to change (`advice`: in params.yaml, or predict's --csv)."""
    fmt = table_format(path, fmt)
    if not path.exists():
        raise UserError(f"{path}: file not found; {advice.source()}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a table file; {advice.source()}")
    if fmt is None:
        raise UserError(
            f"{path}: unknown format {path.suffix or '(no extension)'!r}; use a .csv, .tsv, .parquet or .jsonl "
            f"file or {advice.format()}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty; export the table again")
    if fmt == "parquet":
        try:
            frame = read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; all mean "cannot read this file"
            raise UserError(
                f"{path}: cannot be read as PARQUET ({str(exc).splitlines()[0][:120]}); "
                f"check the file or {advice.format()}"
            ) from None
        table = TableFile(frame, str(path), {"format": "parquet"}, advice=advice)
    elif fmt == "jsonl":
        table = read_json_lines(path, settings, advice)
    else:
        table = read_csv(path, settings, advice)
    if table.frame.empty:
        raise UserError(f"{path}: no data rows; export the table again")
    return table


def read_json_lines(path: Path, settings: Csv, advice: Advice = IN_PARAMS) -> TableFile:
    """JSON Lines: one JSON object per line (blank lines skipped), values typed as JSON types them. Raises
    UserError naming the first line that is not a JSON object."""
    import json

    encoding = settings.encoding or bom_encoding(path.read_bytes()[:4])
    records, lines = [], []
    try:
        with open(path, encoding=encoding) as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {number}: not JSON ({exc.msg}); fix the line") from None
                if not isinstance(record, dict):
                    raise UserError(f"{path} line {number}: not a JSON object; JSON Lines holds one object a line")
                records.append(record)
                lines.append(number)
    except UnicodeDecodeError:
        raise decode_error(path, encoding, advice) from None
    frame = pd.DataFrame.from_records(records)
    return TableFile(frame, str(path), {"format": "jsonl"}, find_lines=lambda: np.array(lines), advice=advice)


def read_csv(path: Path, settings: Csv, advice: Advice = IN_PARAMS) -> TableFile:
    """CSV/TSV as text cells (pyarrow, multi-threaded; pandas when comment lines must be skipped).
    Structure errors are named by line from a pass with Python's csv module (scan_records)."""
    detected = []
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    encoding = settings.encoding
    if encoding is None:
        encoding = bom_encoding(head)
        detected.append("encoding")
    try:
        sample = codecs.getincrementaldecoder(encoding)().decode(head, final=len(head) < SAMPLE_BYTES)
    except UnicodeDecodeError:
        raise decode_error(path, encoding, advice) from None
    sep = settings.sep
    if sep is None:
        sep = sniff_separator(sample, settings)
        detected.append("sep")
    header = read_header(path, sep, settings, encoding, advice)
    if settings.comment is None:
        frame = read_text_arrow(path, encoding, sep, settings, header, advice)
        find_lines = lambda: scan_records(path, encoding, sep, settings, advice)  # noqa: E731 - when needed
    else:  # Arrow cannot skip comment lines; the scan checks rows first, as pandas pads short ones
        lines = scan_records(path, encoding, sep, settings, advice)
        find_lines = lambda: lines  # noqa: E731
        frame = pd.read_csv(
            path,
            sep=sep,
            quotechar=settings.quotechar,
            comment=settings.comment,
            encoding=encoding,
            dtype=pd.StringDtype("pyarrow"),
            keep_default_na=False,
            na_filter=False,
            index_col=False,
            skip_blank_lines=True,
        )
    frame.columns = [name.strip() for name in header]
    read = {
        "format": "csv",
        "encoding": encoding,
        "sep": sep,
        "decimal": settings.decimal,
        "thousands": settings.thousands,
        "quotechar": settings.quotechar,
        "comment": settings.comment,
        "na_values": list(settings.na_values),
        "keep_default_na": settings.keep_default_na,
        "detected": detected,
    }
    table = TableFile(frame, str(path), read, find_lines, advice)
    if settings.decimal is None:
        read["decimal"] = detect_decimal(frame, sep, settings.thousands)
        detected.append("decimal")
    return table


def read_text_arrow(
    path: Path, encoding: str, sep: str, settings: Csv, header: list[str], advice: Advice = IN_PARAMS
) -> pd.DataFrame:
    """Every cell as text, as written: no type inference, no missing values (an empty cell is "")."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    arrow_encoding = "utf8" if encoding in ("utf-8", "utf-8-sig") else encoding  # Arrow drops a UTF-8 BOM itself
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(encoding=arrow_encoding),
            parse_options=pcsv.ParseOptions(delimiter=sep, quote_char=settings.quotechar, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if encoding in ("utf-8", "utf-8-sig") and "UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError):
            raise decode_error(path, encoding, advice) from None
        scan_records(path, encoding, sep, settings, advice)  # names the line of a row of the wrong width
        raise UserError(
            f"{path}: cannot be read as CSV ({str(exc).splitlines()[0][:160]}); check the file "
            f"or {advice.setting('quotechar')}"
        ) from None
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def read_header(path: Path, sep: str, settings: Csv, encoding: str, advice: Advice = IN_PARAMS) -> list[str]:
    """The column names on the first line that is not blank or a comment, checked: pandas would silently
    rename a repeated name to 'name.1' and a blank one to 'Unnamed: 2'. Read from the file, not from the
    detection sample, which may end inside a long header (a table of 100 000 columns)."""
    try:
        with open(path, encoding=encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=sep, quotechar=settings.quotechar, strict=False)
            for record in reader:
                if record and not is_comment(record, settings.comment):
                    check_header(path, [name.strip() for name in record], reader.line_num)
                    return record
    except UnicodeDecodeError:
        raise decode_error(path, encoding, advice) from None
    except csv.Error as exc:
        raise UserError(
            f"{path} line {reader.line_num}: cannot be read as CSV ({exc}); check the quoting "
            f"or {advice.setting('quotechar')}"
        ) from None
    raise UserError(f"{path}: no header line; the first line must name the columns")


def bom_encoding(head: bytes) -> str:
    """UTF-16 and UTF-32 are recognised by their byte-order mark; everything else is read as UTF-8
    (utf-8-sig when the file starts with the UTF-8 BOM Excel writes: dropped, not glued to the first name)."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"


def decode_error(path: Path, encoding: str, advice: Advice = IN_PARAMS) -> UserError:
    """The first byte of the file that `encoding` cannot decode, by offset and line. A BOM is decoded as a
    character here (utf-8, utf-16-le/be), so that offsets count from the first byte of the file."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if encoding in ("utf-16", "utf-32"):
        little = head.startswith(codecs.BOM_UTF32_LE if encoding == "utf-32" else codecs.BOM_UTF16_LE)
        codec = f"{encoding}-{'le' if little else 'be'}"
    else:
        codec = {"utf-8-sig": "utf-8"}.get(encoding, encoding)
    decoder = codecs.getincrementaldecoder(codec)()
    offset, newlines = 0, 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line = newlines + chunk[: exc.start].count(b"\n") + 1
                byte = chunk[exc.start : exc.start + 1].hex()
                return UserError(
                    f"{path}: byte {bad} (line {line}) is {byte!r} in hex, not valid {encoding}; "
                    f"{advice.setting('encoding')} (the file's encoding, e.g. cp1252 or latin-1 for "
                    "files from Excel on Windows) or save it as UTF-8"
                )
            offset += len(chunk)
            newlines += chunk.count(b"\n")
    return UserError(
        f"{path}: the file ends in the middle of a {encoding} character; "
        f"{advice.setting('encoding')} or save the file as UTF-8"
    )


def sniff_separator(sample: str, settings: Csv) -> str:
    """The candidate separator that splits the sample's records into the same number (> 1) of fields most
    consistently, the wider split winning ties; ',' for a file of one column."""
    best, chosen = (0.0, 0), ","
    text = "\n".join(sample.splitlines()[:200])
    for sep in SEPARATORS:
        rows = [
            r
            for r in csv.reader(io.StringIO(text), delimiter=sep, quotechar=settings.quotechar)
            if r and not is_comment(r, settings.comment)
        ]
        if len(rows) > 2:
            rows = rows[:-1]  # the sample may end inside its last record
        if not rows or len(rows[0]) < 2:
            continue
        score = (sum(len(r) == len(rows[0]) for r in rows) / len(rows), len(rows[0]))
        if score > best:
            best, chosen = score, sep
    return chosen


def is_comment(record: list[str], comment: str | None) -> bool:
    return comment is not None and record[0].lstrip().startswith(comment)


def scan_records(path: Path, encoding: str, sep: str, settings: Csv, advice: Advice = IN_PARAMS) -> np.ndarray:
    """One pass over the file with Python's csv module: the 1-based physical line where each data row
    starts (int64, (n_rows,)), the header checked on the way. Raises UserError for a row with more or
    fewer fields than the header, naming its line."""
    starts = array.array("q")
    header, header_line = None, 0
    try:
        with open(path, encoding=encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=sep, quotechar=settings.quotechar, strict=False)
            line = 1
            for record in reader:
                start, line = line, reader.line_num + 1
                if not record or is_comment(record, settings.comment):
                    continue  # blank and comment lines, as Arrow and pandas skip them
                if settings.comment is not None:  # an inline comment ends the record there
                    cut = next((i for i, value in enumerate(record) if settings.comment in value), None)
                    record = record if cut is None else record[: cut + 1]
                if header is None:
                    header, header_line = [name.strip() for name in record], start
                    check_header(path, header, header_line)
                    continue
                if record == ["\x1a"]:
                    raise UserError(
                        f"{path} line {start}: holds only a DOS end-of-file mark (Ctrl-Z, byte 1a); delete it"
                    )
                if len(record) != len(header) and settings.comment is None and header[0].startswith("#"):
                    raise UserError(
                        f"{path} line {start}: {len(record)} fields, but the header (line {header_line}) "
                        f"has {len(header)} and starts with '#': if lines starting with '#' are comments, "
                        f"{advice.setting('comment', '#')}"
                    )
                if len(record) != len(header) and len(header) == 1:
                    raise UserError(
                        f"{path} line {start}: {len(record)} fields, but the header (line {header_line}) "
                        f"was read as one column with the separator {sep!r}; {advice.setting('sep')}"
                    )
                if len(record) != len(header):
                    raise UserError(
                        f"{path} line {start}: {len(record)} fields, but the header (line {header_line}) has "
                        f"{len(header)}; quote values that contain the separator {sep!r} (or "
                        f"{advice.setting('sep')}), and fill or remove missing fields"
                    )
                starts.append(start)
    except UnicodeDecodeError:
        raise decode_error(path, encoding, advice) from None
    except csv.Error as exc:
        raise UserError(
            f"{path} line {reader.line_num}: cannot be read as CSV ({exc}); check the quoting "
            f"or {advice.setting('quotechar')}"
        ) from None
    if header is None:
        raise UserError(f"{path}: no header line; the first line must name the columns")
    return np.frombuffer(starts, dtype=np.int64).copy()


def check_header(path: Path, header: list[str], line: int) -> None:
    """pandas would silently rename a repeated name to 'name.1' and a blank one to 'Unnamed: 2'."""
    blank = [i + 1 for i, name in enumerate(header) if not name]
    if blank:
        why = (
            "a separator at the end of every line?"
            if blank[0] == len(header)
            else "an index saved by mistake?"
            if blank[0] == 1
            else "a column nobody named?"
        )
        raise UserError(
            f"{path} line {line}: column {blank[0]} of {len(header)} has no name in the header ({why}); "
            "name it or delete the column"
        )
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        where = [i + 1 for i, name in enumerate(header) if name == repeated[0]]
        raise UserError(
            f"{path} line {line}: the header names columns {', '.join(map(str, where))} both "
            f"{shorten(repeated[0])}; give each column its own name"
        )


def detect_decimal(frame: pd.DataFrame, sep: str, thousands: str | None) -> str:
    """The decimal mark, when data.csv.decimal is null: the other mark than a pinned thousands separator;
    in a ';'-separated file (European Excel) ',' unless the cells write fractions only as 1.5; else '.'.
    1.641 proves nothing in a ';' file: it is 1641 with a thousands separator as often as a fraction."""
    if thousands in (".", ","):
        return {".": ",", ",": "."}[thousands]
    if sep != ";":
        return "."
    comma = dot = 0
    for column in frame.columns:
        values = pd.Series(frame[column].unique(), dtype=pd.StringDtype("pyarrow")).str.strip()
        comma += int(values.str.fullmatch(r"[+-]?\d+(?:\.\d{3})*,\d+").sum())
        grouped = values.str.fullmatch(GROUPED.format(decimal=",", sep=r"\."))
        dot += int((values.str.fullmatch(r"[+-]?\d*\.\d+") & ~grouped).sum())
    return "." if dot > 0 and comma == 0 else ","


# ---------------------------------------------------------------- cells to typed columns


def as_label(value) -> str | None:
    """A category or class value as text, the same however the file typed it: 3, 3.0 and "3" -> "3";
    surrounding whitespace stripped."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# infer_dtype kinds whose distinct values factorize into the same groups as as_label gives them labels;
# in other object columns 1, 1.0 and True are one value to factorize but "1", "1" and "True" to as_label.
FACTORIZE_SAFE = {"string", "integer", "floating", "mixed-integer-float", "boolean", "empty"}


def as_labels(values: pd.Series) -> np.ndarray:
    """as_label of every value, as an object array (None where missing)."""
    return text_cells(values)[0]


def text_cells(values: pd.Series) -> tuple[np.ndarray, int]:
    """Every cell as stripped text (object array, None where the cell is null) and how many cells had
    surrounding whitespace."""
    text, stripped = text_series(values)
    return text.to_numpy(dtype=object, na_value=None), stripped


def text_series(values: pd.Series) -> tuple[pd.Series, int]:
    """Every cell as stripped text (a pyarrow string Series, <NA> where the cell is null) and how many cells
    had surrounding whitespace. Text columns are stripped in Arrow; other columns convert each distinct
    value once (as_label), not once per row."""
    if isinstance(values.dtype, pd.StringDtype):
        text = values.astype(pd.StringDtype("pyarrow"))
        stripped = text.str.strip()
        return stripped, int((stripped != text).fillna(False).sum())
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in FACTORIZE_SAFE:
        names = [as_label(v) for v in values]
        changed = sum(isinstance(v, str) and v != n for v, n in zip(values, names, strict=True))
        return pd.Series(names, index=values.index, dtype=pd.StringDtype("pyarrow")), changed
    codes, uniques = pd.factorize(values)
    unique_names = np.array([as_label(u) for u in uniques] + [None], dtype=object)
    stripped_unique = np.array([isinstance(u, str) and u != u.strip() for u in uniques] + [False])
    return (
        pd.Series(unique_names[codes], index=values.index, dtype=pd.StringDtype("pyarrow")),
        int(stripped_unique[codes].sum()),
    )


def read_labels(values: pd.Series) -> tuple[np.ndarray, int]:
    """The target column as text labels (None only for an empty cell) and how many were stripped."""
    labels, stripped = text_cells(values)
    labels[labels == ""] = None
    return labels, stripped


@dataclass
class Column:
    """One feature column, typed: float64 numbers (NaN where missing) or text categories (None where missing)."""

    values: np.ndarray | None  # None once a caller has taken them (memory on big tables)
    numeric: bool
    markers: dict[str, int] = field(default_factory=dict)  # missing-value markers found, with their counts
    stripped: int = 0  # categories with surrounding whitespace
    thousands: str | None = None  # the thousands separator the numbers use


def read_column(
    table: TableFile, name: str, role: str | None, settings: Csv, decimal: str = ".", advice: str | None = None
) -> Column:
    """Type the column `name` of `table`. role: "numeric" or "categorical" to force it, None to detect.
    Raises UserError naming the line of the first value that is not a number in a numeric column, with
    `advice` (what to do) or, by default, the params.yaml keys that would change how it is read."""
    values = table.frame[name]
    # Only a column of mixed Python objects can hold lists (pandas infers "mixed" for them): a text or
    # number column is spared a pass over every row.
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in FACTORIZE_SAFE:
        nested = values.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).to_numpy()
        if nested.any():
            row = int(np.flatnonzero(nested)[0])
            raise UserError(
                f"{table.where(row)}: column {shorten(name)} holds {type(values.iloc[row]).__name__} values "
                f"(e.g. {str(values.iloc[row])[:40]}), not one number or category per row; flatten it "
                "into columns or leave it out of data.features"
            )
    if pd.api.types.is_bool_dtype(values) and role != "numeric":
        return Column(text_cells(values)[0], numeric=False)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if role == "categorical":
            return Column(text_cells(values)[0], numeric=False)
        if values.dtype == np.float64:  # a view, not a copy of a column of millions of rows
            return Column(values.to_numpy(), numeric=True)
        return Column(values.to_numpy(dtype=np.float64, na_value=np.nan), numeric=True)

    cells, stripped = text_series(values)
    if role != "categorical" and decimal == ".":
        numbers = plain_numbers(cells)
        if numbers is not None:
            return Column(numbers, numeric=True)
    codes, uniques = pd.factorize(cells)  # missing -> code -1
    text = pd.Series(uniques, dtype=pd.StringDtype("pyarrow"))
    uniques = text.to_numpy(dtype=object)
    marker = missing_marker(text, settings).to_numpy()
    numbers, thousands = parse_numbers(text, decimal, settings.thousands)
    placeholder = (text.str.fullmatch(PLACEHOLDER) & np.isnan(numbers)).to_numpy()
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    present = ~marker & ~placeholder  # distinct values that are neither missing nor placeholders
    n_present, n_numbers = counts[present].sum(), counts[present & ~np.isnan(numbers)].sum()
    numeric = role == "numeric" or (role is None and n_present > 0 and n_numbers >= NUMERIC_SHARE * n_present)
    if numeric:
        bad = np.flatnonzero(present & np.isnan(numbers))
        if len(bad):
            row = int(np.flatnonzero(np.isin(codes, bad))[0])
            value = uniques[codes[row]]
            marks = f"decimal {decimal!r}" + (f" and thousands {thousands!r}" if thousands else "")
            hint = (
                f" (numbers are read with {marks}; {table.advice.setting('decimal')} or "
                f"{table.advice.setting('thousands')} if the file writes them otherwise)"
                if re.search(r"\d", value)
                else ""
            )
            or_else = (
                f"remove {shorten(name)} from data.numeric"
                if role == "numeric"
                else f"list {shorten(name)} in data.categorical"
            )
            advice = advice or (
                f"fix the value, add it to data.csv.na_values if it marks a missing value, or {or_else}"
            )
            raise UserError(
                f"{table.where(row)}: column {shorten(name)} holds {shorten(value)}, not a number{hint}; {advice}"
            )
        missing = marker | placeholder
        found = {str(uniques[i]): int(counts[i]) for i in np.flatnonzero(missing) if uniques[i] != ""}
        column = np.append(np.where(missing, np.nan, numbers), np.nan)[codes]
        return Column(column, numeric=True, markers=found, thousands=thousands if thousands else None)
    found = {str(uniques[i]): int(counts[i]) for i in np.flatnonzero(marker) if uniques[i] != ""}
    column = np.append(np.where(marker, None, uniques), [None])[codes]
    return Column(column.astype(object), numeric=False, markers=found, stripped=stripped)


def plain_numbers(text: pd.Series) -> np.ndarray | None:
    """The fast path for the usual numeric column: when every cell is empty or a plain number with a '.'
    decimal mark (Arrow's cast, in C), float64 with NaN for the empty cells; None when any cell is
    anything else (a marker, a thousands separator, a typo), for the full rules, or when none is a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = pa.array(text.array, type=pa.string())
    cells = pc.if_else(pc.equal(cells, ""), pa.scalar(None, pa.string()), cells)
    try:
        values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    present = ~pc.is_null(cells).to_numpy(zero_copy_only=False)
    if not present.any() or np.isnan(values[present]).any():  # "nan" written out is a marker: report it
        return None
    return values


def missing_marker(text: pd.Series, settings: Csv) -> pd.Series:
    """Which cells mark a missing feature value: empty, a default marker (any case) or data.csv.na_values."""
    marker = (text == "") | text.isin(settings.na_values)
    if settings.keep_default_na:
        marker |= text.str.lower().isin({value.lower() for value in DEFAULT_NA_VALUES})
    return marker.fillna(False).astype(bool)


def full_match(text: pd.Series, pattern: str) -> pd.Series:
    """Which cells match pattern whole, as bool (a missing cell does not): without pandas 2's warning about
    fillna downcasting an object column of matches."""
    return text.str.fullmatch(pattern).astype("boolean").fillna(False).astype(bool)


def parse_numbers(text: pd.Series, decimal: str, thousands: str | None) -> tuple[np.ndarray, str | None]:
    """Numbers written with `decimal` and, optionally, thousands separators -> float64 (NaN where a cell is
    not such a number). thousands None: detected (the candidate that most cells are grouped with); "": none.
    Returns the values and the thousands separator used."""
    text = text.str.replace("\u2212", "-", regex=False)  # the Unicode minus sign some exports write
    d = re.escape(decimal)
    plain = full_match(text, rf"[+-]?(?:\d+(?:{d}\d*)?|{d}\d+)(?:[eE][+-]?\d+)?")
    infinite = full_match(text, r"(?i)[+-]?inf(?:inity)?")

    def grouped(sep: str) -> pd.Series:
        return full_match(text, GROUPED.format(sep=re.escape(sep), decimal=d)) & ~plain

    if thousands is None:
        matches = {sep: int(grouped(sep).sum()) for sep in THOUSANDS[decimal]}
        thousands = max(matches, key=lambda sep: matches[sep]) if max(matches.values(), default=0) else ""
    in_groups = grouped(thousands) if thousands else pd.Series(False, index=text.index)
    number = plain | in_groups
    cleaned = text.where(number, "")
    if thousands:
        cleaned = cleaned.str.replace(thousands, "", regex=False)
    if decimal != ".":
        cleaned = cleaned.str.replace(decimal, ".", regex=False)
    values = pd.to_numeric(cleaned.where(number, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    overflow = number.to_numpy(dtype=bool) & np.isnan(values)  # pandas 2 gives up on 1e400; Python says inf
    values[overflow] = [float(cell) for cell in cleaned.to_numpy()[overflow]]
    values[infinite.to_numpy()] = np.where(text[infinite].str.startswith("-"), -np.inf, np.inf)
    return values, (thousands if in_groups.any() else None)
