"""Tables are read as their authors wrote them: each file is made here, shaped like the ones people post
in pandas bug reports, and the clean stage's CLI must read the right classes, dtypes, numbers and lines,
say what it detected in reports/clean.json, and leave the raw file byte-identical."""

import codecs
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.table_files import SAMPLE_BYTES
from conftest import clean_cli


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_clean(
    tmp_path, capsys, content: bytes | str, data: dict | None = None, clean_cfg: dict | None = None, name: str = "t.csv"
):
    """The clean CLI on a file holding `content`. Returns (exit code, stderr lines, report, cleaned table, meta)."""
    raw = tmp_path / "data" / name
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(content.encode() if isinstance(content, str) else content)
    before = sha256(raw)
    run = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run"))  # a fresh folder per call
    out, report_path = run / "clean", run / "clean.json"
    params = {"data": {"kind": "tabular", "path": str(raw), "target": "y"} | (data or {}), "clean": clean_cfg or {}}
    code, lines = clean_cli(capsys, params, out, report_path)
    assert sha256(raw) == before, "raw data must be byte-identical"
    if code:
        return code, lines, None, None, None
    return (
        0,
        lines,
        json.loads(report_path.read_text()),
        pd.read_parquet(out / "table.parquet"),
        json.loads((out / "meta.json").read_text()),
    )


def csv_text(rows: list[list[str]], sep: str = ",") -> str:
    return "\n".join(sep.join(row) for row in rows) + "\n"


# ---------------------------------------------------------------- labels are text, spelled as written


def test_a_class_named_NA_is_a_class_and_NA_in_a_feature_is_missing(tmp_path, capsys):
    rows = [["region", "f1", "f2", "y"]]
    for i in range(60):
        rows.append(["NA" if i % 7 == 0 else "west", str(i % 11), str(i), ["NA", "EU", "AS"][i % 3]])
    code, _, report, table, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0
    assert meta["classes"] == ["AS", "EU", "NA"]
    assert report["kept_per_class"] == {"AS": 20, "EU": 20, "NA": 20}
    assert report["dropped_by_reason"] == {}
    assert report["read"]["missing_markers_by_column"] == {"region": {"NA": 9}}
    assert report["imputed_by_column"] == {"region": 9}
    assert table["region"].isna().sum() == 9 and set(table["region"].dropna()) == {"west"}


def test_labels_that_look_like_numbers_dates_or_null_stay_as_written(tmp_path, capsys):
    labels = ["01", "1.0", "2024-01-05", "None", "null", "TRUE"]
    rows = [["f", "y"]] + [[str(i), labels[i % 6]] for i in range(60)] + [["99", ""]]
    code, _, report, _, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0 and meta["classes"] == sorted(labels)
    assert report["dropped_by_reason"] == {"missing_target": 1}, "only the empty cell is a missing label"
    assert report["dropped"][0]["line"] == 62


def test_labels_and_categories_with_stray_spaces_are_stripped_and_counted(tmp_path, capsys):
    rows = [["island", "mass", "y"]]
    species = [" Adelie", "Adelie", "Gentoo ", "Gentoo", "Chinstrap"]
    for i in range(50):
        rows.append([[" Dream", "Dream", "Biscoe "][i % 3], str(3000 + i * 10), species[i % 5]])
    code, _, report, table, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0
    assert meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert report["kept_per_class"] == {"Adelie": 20, "Chinstrap": 10, "Gentoo": 20}
    assert report["read"]["whitespace_stripped_by_column"] == {"y": 20, "island": 33}
    assert set(table["island"]) == {"Dream", "Biscoe"}


# ---------------------------------------------------------------- numbers as written


def test_quoted_numbers_with_thousands_separators_are_numbers(tmp_path, capsys):
    rows = [["population", "area", "y"]]
    for i in range(40):
        population = f"{20037 + 1000 * i:,}" if i % 2 else str(512 + i)  # "20,037" and "512"
        rows.append([f'"{population}"', f'"{1234567.5 + i:,.1f}"', "ab"[i % 2]])
    code, _, report, table, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0
    assert meta["numeric"] == ["population", "area"] and meta["categorical"] == []
    assert table["population"].dtype == np.float64 and table["area"].dtype == np.float64
    assert table["population"].tolist()[:3] == [512.0, 21037.0, 514.0]
    assert table["area"].tolist()[0] == 1234567.5
    assert report["read"]["thousands_by_column"] == {"population": ",", "area": ","}


@pytest.mark.parametrize("written, thousands", [("1'234.5", "'"), ("1\u00a0234.5", "\u00a0"), ("1 234.5", " ")])
def test_swiss_and_french_thousands_separators(tmp_path, capsys, written, thousands):
    rows = [["n", "x", "y"]] + [[str(i), written if i % 2 else "12.5", "ab"[i % 2]] for i in range(20)]
    code, _, report, table, _ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0 and table["x"].dtype == np.float64
    assert sorted(set(table["x"])) == [12.5, 1234.5]
    assert report["read"]["thousands_by_column"] == {"x": thousands}


def test_european_excel_semicolons_and_decimal_commas(tmp_path, capsys):
    rows = [["klasse", "f1", "f2", "f3"]]
    for i in range(30):
        rows.append(["ab"[i % 2], f"{i},5", f"1.{i:03d},25", str(i)])  # 1,5 and 1.000,25
    content = codecs.BOM_UTF8 + csv_text(rows, ";").encode()
    code, _, report, table, meta = run_clean(tmp_path, capsys, content, {"target": "klasse"})
    assert code == 0
    read = report["read"]
    assert (read["sep"], read["decimal"], read["encoding"]) == (";", ",", "utf-8-sig")
    assert set(read["detected"]) == {"sep", "decimal", "encoding"}
    assert meta["numeric"] == ["f1", "f2", "f3"]
    assert table["f1"].tolist()[:2] == [0.5, 1.5] and table["f2"].tolist()[1] == 1001.25
    assert read["thousands_by_column"] == {"f2": "."}
    assert meta["csv"]["sep"] == ";" and meta["csv"]["decimal"] == ",", "prediction reads new files the same way"


@pytest.mark.parametrize("csv_settings", [{}, {"thousands": "."}])
def test_a_semicolon_file_of_grouped_integers_reads_them_as_thousands(tmp_path, capsys, csv_settings):
    """1.641 in a ';' file with no fractions anywhere: a thousands separator, detected or pinned."""
    rows = [["a", "y"]] + [[f"{752 + 450 * i:,}".replace(",", "."), "ab"[i % 2]] for i in range(30)]
    code, _, report, table, _ = run_clean(tmp_path, capsys, csv_text(rows, ";"), {"csv": csv_settings})
    assert code == 0 and report["read"]["decimal"] == ","
    assert table["a"].tolist()[:3] == [752.0, 1202.0, 1652.0]


def test_a_semicolon_file_with_dot_fractions_keeps_the_dot(tmp_path, capsys):
    rows = [["a", "y"]] + [[f"0.{125 + i}", "ab"[i % 2]] for i in range(20)] + [["1.5", "a"]]
    code, _, report, table, _ = run_clean(tmp_path, capsys, csv_text(rows, ";"))
    assert code == 0 and report["read"]["decimal"] == "." and table["a"].tolist()[:2] == [0.125, 0.126]


def test_a_wrong_pinned_separator_says_which_key_to_set(tmp_path, capsys):
    rows = [["klasse", "f1"]] + [["ab"[i % 2], f"{i},5"] for i in range(10)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows, ";"), {"target": "klasse", "csv": {"sep": ","}})
    assert code == 1
    assert (
        "t.csv line 2: 2 fields, but the header (line 1) was read as one column with the separator ','; "
        "set data.csv.sep" in lines[0]
    )


def test_tab_separated_file_with_commas_in_text(tmp_path, capsys):
    rows = [["note", "x", "y"]] + [[f"hello, world {i % 3}", str(i), "ab"[i % 2]] for i in range(20)]
    code, _, report, table, meta = run_clean(tmp_path, capsys, csv_text(rows, "\t"), name="t.tsv")
    assert code == 0 and report["read"]["sep"] == "\t"
    assert meta["categorical"] == ["note"] and table["x"].dtype == np.float64


def test_missing_markers_in_a_numeric_column_keep_it_numeric(tmp_path, capsys):
    rows = [["temp", "rain", "y"]]
    for i in range(40):
        temp = ["-", "n/a", "?", "—"][i // 10] if i % 10 == 0 else f"{20 + i % 7}.5"
        rows.append([temp, "missing" if i == 5 else str(i), "ab"[i % 2]])
    # "missing" is a word, not a known marker: an error that says how to declare it
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 1 and "line 7: column 'rain' holds 'missing', not a number" in lines[0]
    assert "add it to data.csv.na_values" in lines[0]
    code, _, report, table, meta = run_clean(tmp_path, capsys, csv_text(rows), {"csv": {"na_values": ["missing"]}})
    assert code == 0 and meta["numeric"] == ["temp", "rain"]
    assert report["read"]["missing_markers_by_column"] == {
        "temp": {"-": 1, "n/a": 1, "?": 1, "—": 1},
        "rain": {"missing": 1},
    }
    assert report["imputed_by_column"] == {"temp": 4, "rain": 1}
    assert table["temp"].isna().sum() == 4 and table["temp"].max() == 26.5


def test_numeric_column_with_a_typo_is_still_an_error_naming_the_line(tmp_path, capsys):
    rows = [["x", "y"]] + [["twelve" if i == 29 else str(i), "ab"[i % 2]] for i in range(30)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 1 and "t.csv line 31: column 'x' holds 'twelve', not a number" in lines[0]
    rows = [["colour", "y"]] + [[["red", "blue"][i % 2], "ab"[i % 2]] for i in range(30)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows), {"numeric": ["colour"]})
    assert code == 1 and lines[0].endswith("or remove 'colour' from data.numeric"), "the user's own setting is named"


# ---------------------------------------------------------------- structure, lines, encodings


def test_errors_name_the_physical_line_after_quoted_line_breaks(tmp_path, capsys):
    lines = ["id,note,x,y"]
    for i in range(40):
        note = f'"first line\nsecond line {i}"' if i % 2 else "short"
        value = "oops" if i == 35 else str(i)
        if i == 35:
            bad_line = len("\n".join(lines).splitlines()) + 1
        lines.append(f"{i},{note},{value},{'ab'[i % 2]}")
    content = "\n".join(lines) + "\n"
    assert bad_line == 54 and content.splitlines()[bad_line - 1].startswith("35,")  # grep -n would say 54
    code, messages, *_ = run_clean(tmp_path, capsys, content)
    assert code == 1 and "t.csv line 54: column 'x' holds 'oops', not a number" in messages[0]


def test_a_row_with_too_many_or_too_few_fields_names_its_line(tmp_path, capsys):
    good = [["a", "b", "y"]] + [[str(i), str(i), "ab"[i % 2]] for i in range(20)]
    short = csv_text(good).replace("7,7,b\n", "7,b\n")
    code, lines, *_ = run_clean(tmp_path, capsys, short)
    assert code == 1 and "t.csv line 9: 2 fields, but the header (line 1) has 3" in lines[0]
    unquoted = csv_text(good).replace("3,3,b\n", "3,3,5,b\n")
    code, lines, *_ = run_clean(tmp_path, capsys, unquoted)
    assert code == 1 and "t.csv line 5: 4 fields" in lines[0] and "quote values that contain the separator" in lines[0]


@pytest.mark.parametrize(
    "header, message",
    [
        ("a,b,a,y", "line 1: the header names columns 1, 3 both 'a'; give each column its own name"),
        (",b,c,y", "line 1: column 1 of 4 has no name in the header (an index saved by mistake?); name it or delete"),
        ("a,b,c,y,", "line 1: column 5 of 5 has no name in the header (a separator at the end of every line?)"),
    ],
)
def test_a_header_that_repeats_or_omits_a_name_is_an_error(tmp_path, capsys, header, message):
    names = header.split(",")
    rows = [names] + [["ab"[i % 2] if name == "y" else str(i) for name in names] for i in range(20)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 1 and message in lines[0], lines[0]


def test_numbers_in_an_unknown_format_are_a_warning_in_the_report(tmp_path, capsys):
    """'45%' is no number format the reader knows: the column is categorical, and the report says so loudly."""
    rows = [["share", "x", "y"]] + [[f"{i}%", str(i % 7), "ab"[i % 2]] for i in range(40)]
    code, _, report, _, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0 and meta["categorical"] == ["share"] and meta["numeric"] == ["x"]
    [warning] = report["read"]["warnings"]
    assert (
        warning.startswith("column 'share' is read as categorical with 40 distinct values in 40 rows")
        and "'0%'" in warning
        and "list 'share' in data.numeric" in warning
    )
    code, _, report, _, _ = run_clean(tmp_path, capsys, csv_text(rows), {"categorical": ["share"]})
    assert report["read"]["warnings"] == [], "a column the user called categorical is theirs to judge"
    # 12.5 % of a word among numbers: below the 90 % rule, so categorical, and the warning names the word
    rows = [["rain", "y"]] + [["unknown" if i % 8 == 0 else str(i), "ab"[i % 2]] for i in range(120)]
    code, _, report, _, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert meta["categorical"] == ["rain"]
    assert "add 'unknown' (15 rows) to data.csv.na_values if they mark missing values" in report["read"]["warnings"][0]


def test_comment_lines_without_the_setting_say_which_key_to_set(tmp_path, capsys):
    body = "# exported 2026-11-30\nx,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20))
    code, lines, *_ = run_clean(tmp_path, capsys, body)
    assert (
        code == 1
        and "t.csv line 2: 2 fields, but the header (line 1) has 1 and starts with '#': if lines "
        "starting with '#' are comments, set data.csv.comment: '#'"
        in lines[0]
    )


def test_comment_and_blank_lines_are_skipped_and_lines_still_counted(tmp_path, capsys):
    body = "# exported 2026-11-30\nx,y\n\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20)) + "# end\n5.5,\n"
    code, _, report, table, _ = run_clean(tmp_path, capsys, body, {"csv": {"comment": "#"}})
    assert code == 0 and len(table) == 20
    assert report["dropped"] == [
        {"id": "20", "line": 25, "reason": "missing_target", "detail": "no value in 'y'", "column": "y"}
    ]


def test_a_cp1252_file_names_the_byte_and_the_setting_then_reads_with_it(tmp_path, capsys):
    rows = [["city", "x", "y"]] + [[["Málaga", "Zürich", "Köln"][i % 3], str(i), "ab"[i % 2]] for i in range(30)]
    content = csv_text(rows).encode("cp1252")
    code, lines, *_ = run_clean(tmp_path, capsys, content)
    offset = content.index("á".encode("cp1252"))
    assert code == 1
    assert f"t.csv: byte {offset} (line 2) is 'e1' in hex, not valid utf-8; set data.csv.encoding" in lines[0]
    code, _, report, table, _ = run_clean(tmp_path, capsys, content, {"csv": {"encoding": "cp1252"}})
    assert code == 0 and set(table["city"]) == {"Málaga", "Zürich", "Köln"}
    assert report["read"]["encoding"] == "cp1252" and "encoding" not in report["read"]["detected"]
    # a UTF-8 file from Excel (BOM, CRLF) with one pasted cp1252 byte: offsets count from the file's first byte
    mixed = codecs.BOM_UTF8 + csv_text(rows[:20]).replace("\n", "\r\n").encode() + "Málaga,99,a\r\n".encode("cp1252")
    code, lines, *_ = run_clean(tmp_path, capsys, mixed)
    offset = mixed.index("á".encode("cp1252"))
    assert f"t.csv: byte {offset} (line 21) is 'e1' in hex, not valid utf-8-sig" in lines[0]


def test_utf16_tab_separated_export_is_read(tmp_path, capsys):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated."""
    rows = [["Größe", "y"]] + [[f"{i},5", ["ja", "nein"][i % 2]] for i in range(20)]
    content = csv_text(rows, "\t").encode("utf-16")
    code, _, report, table, meta = run_clean(tmp_path, capsys, content, name="t.tsv")
    assert code == 0 and (report["read"]["encoding"], report["read"]["sep"]) == ("utf-16", "\t")
    assert meta["classes"] == ["ja", "nein"] and meta["categorical"] == ["Größe"], (
        "1,5 in a tab-separated file is text unless data.csv.decimal says ','"
    )
    code, _, _, table, meta = run_clean(tmp_path, capsys, content, {"csv": {"decimal": ","}}, name="t.tsv")
    assert meta["numeric"] == ["Größe"] and table["Größe"].tolist()[:2] == [0.5, 1.5]


# ---------------------------------------------------------------- reports name what they are about


def test_a_small_class_is_named_with_its_count(tmp_path, capsys):
    rows = [["x", "y"]] + [[str(i), "abc"[i % 3] if i < 57 else "rare"] for i in range(60)]
    code, _, report, _, meta = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 0 and meta["classes"] == ["a", "b", "c"]
    assert report["small_classes_dropped"] == {"rare": 3}
    assert report["dropped"][0]["detail"] == "class 'rare' has 3 examples, fewer than the 7 the stratified split needs"


def test_a_target_column_with_no_values_is_named(tmp_path, capsys):
    rows = [["x", "y"]] + [[str(i), ""] for i in range(10)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 1 and "t.csv: target column 'y' has no values; fill it" in lines[0]


def test_a_continuous_target_is_one_short_line_not_a_list_of_every_value(tmp_path, capsys):
    rows = [["x", "y"]] + [[str(i), f"{i * 0.37:.3f}"] for i in range(5000)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows))
    assert code == 1 and len(lines[0]) < 400, len(lines[0])
    assert "the target has 5000 distinct values in 5000 examples (e.g. '0.000', '0.370', '0.740')" in lines[0]
    assert "is data.target the column of class labels?" in lines[0]


def test_a_dos_end_of_file_mark_is_named(tmp_path, capsys):
    rows = [["x", "y"]] + [[str(i), "ab"[i % 2]] for i in range(20)]
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows).replace("\n", "\r\n") + "\x1a")
    assert code == 1 and "t.csv line 22: holds only a DOS end-of-file mark (Ctrl-Z, byte 1a); delete it" in lines[0]


def test_parquet_list_and_date_columns(tmp_path, capsys):
    frame = pd.DataFrame(
        {
            "x": range(40),
            "y": ["ab"[i % 2] for i in range(40)],
            "when": pd.date_range("2024-01-01", periods=40, freq="D"),
        }
    )
    frame.to_parquet(tmp_path / "dates.parquet")
    code, _, report, _, meta = run_clean(tmp_path, capsys, (tmp_path / "dates.parquet").read_bytes(), name="t.parquet")
    assert code == 0 and meta["categorical"] == ["when"]
    assert report["read"]["warnings"] == [
        "column 'when' holds dates and times, read as categories (one per distinct "
        "value): derive features from it (month, day of week, ...) or leave it out "
        "of data.features"
    ]
    frame.assign(lst=[[1, 2]] * 40).to_parquet(tmp_path / "lists.parquet")
    code, lines, *_ = run_clean(tmp_path, capsys, (tmp_path / "lists.parquet").read_bytes(), name="t.parquet")
    assert (
        code == 1
        and "t.parquet row 0: column 'lst' holds ndarray values (e.g. [1 2]), not one number or "
        "category per row; flatten it into columns or leave it out of data.features"
        in lines[0]
    )


# ---------------------------------------------------------------- huge values and wide tables


def test_an_error_quotes_at_most_80_characters_of_a_huge_value(tmp_path, capsys):
    huge = "9" * 500_000 + "x" + "9" * 500_000  # a 1 MB cell that is not a number
    rows = [["f1", "f2", "y"]] + [[str(i), str(i % 5), "ab"[i % 2]] for i in range(40)]
    rows[7][0] = huge
    code, lines, *_ = run_clean(tmp_path, capsys, csv_text(rows), {"numeric": ["f1"]})
    assert code == 1 and len(lines[0]) < 600, len(lines[0])
    assert "line 8: column 'f1' holds '9999" in lines[0] and "...' (1,000,001 characters), not a number" in lines[0]
    long_name = "c" * 100_000  # a header cell pasted from somewhere
    code, lines, *_ = run_clean(
        tmp_path, capsys, csv_text([[long_name, "y"], ["1", "a"], ["2", "b"]]), {"target": "label"}
    )
    assert code == 1 and len(lines[0]) < 600 and "target column 'label' not found" in lines[0]


def test_a_table_of_20000_columns_is_cleaned_whole(tmp_path, capsys):
    """Cleaning grows linearly with the columns (each column was once set into a frame of all of them:
    quadratic, minutes at 100 000 columns); BENCHMARKS.md times it. No timing here: the result is checked."""
    rng = np.random.default_rng(0)
    columns = 20_000
    frame = pd.DataFrame(rng.normal(size=(30, columns)).round(3), columns=[f"c{i}" for i in range(columns)])
    frame["c7"] = np.where(np.arange(30) % 3 == 0, "red", "blue")
    frame["y"] = np.array(["a", "b", "c"])[np.arange(30) % 3]
    text = frame.to_csv(index=False)
    assert len(text.splitlines()[0]) > SAMPLE_BYTES, "the header alone is longer than the detection sample"
    code, lines, report, table, meta = run_clean(tmp_path, capsys, text)
    assert code == 0, lines
    assert list(table.columns) == [f"c{i}" for i in range(columns)] + ["_label", "_id"]
    assert len(meta["numeric"]) == columns - 1 and meta["categorical"] == ["c7"]
    assert report["n_kept"] == 30 and np.allclose(table["c19999"], frame["c19999"])
