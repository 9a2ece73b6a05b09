"""data.kind text: texts with a class label, from a table (CSV/TSV/Parquet/JSON Lines: data.text columns and
data.target) or from a folder of class sub-folders of .txt/.eml files; a BiLSTM over a subword tokenizer
fitted on the train split, or a pretrained Transformer encoder fine-tuned (train.arch).

clean: bytes decoded (data.csv.encoding, else detected), e-mails reduced to subject and body, Unicode NFC,
stripped; empty, too short (clean.min_chars) and duplicate texts (whitespace ignored; conflicting labels
reported as such) dropped, long ones cut to clean.max_chars and counted; outputs/clean/texts.parquet.
Preprocessing: a tokenizer (Hugging Face `tokenizers`), saved as tokenizer.json (data, not code): WordPiece
trained on the train split only (bilstm), or the checkpoint's own (transformer). Model input: token ids,
int64 (n, text.max_length), right-padded with the tokenizer's pad id. Augmentation: copies with random token
deletion and swaps. The served model takes raw strings: a DataFrame with a `text` column.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.errors import UserError, shorten
from components.io import atomic_path, read_json, read_parquet, write_json
from components.kinds.base import Cleaned, GeneratorSpace
from components.params import Augment, Clean, Data, Params

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)
NETWORKS: tuple[str, ...] = ("bilstm", "transformer")
SERVING_SETTINGS: tuple[str, ...] = ("text", "text_separator", "max_chars", "csv")
SERVING_PACKAGES: tuple[str, ...] = ("tokenizers", "transformers")
TEXT_SUFFIXES = (".txt", ".eml")
COLUMN = "text"  # the one column of raw input: the texts, joined from data.text's columns where several
SPECIALS = ["[PAD]", "[UNK]"]  # the fitted tokenizer's; [PAD] is id 0


# ---------------------------------------------------------------- clean


def read_clean(source: Path, data: Data, cfg: Clean) -> Cleaned:
    """Texts from a table file (or a folder holding one table file, as Kubeflow's fetch writes it) or from a
    folder of class sub-folders, cleaned: features a DataFrame with one column `text`; ids row numbers
    (tables) or file paths (folders). Raises UserError naming the file, column or setting."""
    if source.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in source.iterdir()):
        cleaned = read_folder(source, data, cfg)
        settings_csv = data.csv.model_dump(mode="json")
    else:
        from components.kinds.table_clean import prediction_csv
        from components.kinds.tables import table_file

        cleaned = read_table_texts(table_file(source, data, "data.kind text"), data)
        settings_csv = prediction_csv(data, cleaned.read)
    clean_texts(cleaned, cfg, source)
    cleaned.settings = {
        "target": data.target,
        "text": data.text,
        "text_separator": data.text_separator,
        "max_chars": cfg.max_chars,
        "csv": settings_csv,
    }
    return cleaned


def read_table_texts(path: Path, data: Data) -> Cleaned:
    """The text column(s) and the target of a table, rows without a label dropped (the tables kind's rules)."""
    from components.table_files import read_labels, read_table

    table = read_table(path, data.format, data.csv)
    columns = [data.text] if isinstance(data.text, str) else list(data.text)
    if not data.target:
        raise UserError(f"{path}: data.kind text from a table needs data.target, the column of class labels")
    missing = [c for c in [*columns, data.target] if c not in table.frame.columns]
    if missing:
        known = ", ".join(shorten(c, 30) for c in list(table.frame.columns)[:10])
        key = "data.target" if missing[0] == data.target else "data.text"
        raise UserError(f"{path}: no column {shorten(missing[0])}; set {key} to one of: {known}")
    for column in columns:
        values = table.frame[column]
        present = values.dropna()
        as_text = present.astype(str).str.strip()
        if len(present) and (
            pd.api.types.is_numeric_dtype(values) or pd.to_numeric(as_text, errors="coerce").notna().all()
        ):
            raise UserError(
                f"{path}: column {shorten(column)} holds numbers, not text (e.g. {shorten(present.iloc[0])}); "
                "set data.text to the column(s) holding the texts"
            )
    texts = joined_texts(table.frame, columns, data.text_separator)
    labels, _ = read_labels(table.frame[data.target])
    cleaned = Cleaned(labels, np.arange(len(texts)), pd.DataFrame({COLUMN: texts}), source_file=table)
    cleaned.read = table.read
    cleaned.n_input = len(texts)
    cleaned.keep(pd.notna(labels), "missing_target", "no class label", column=data.target)
    return cleaned


def joined_texts(frame: pd.DataFrame, columns: list[str], separator: str) -> list[str]:
    """Each row's text: its non-blank cells of `columns` joined with separator (empty cells skipped)."""
    parts = [frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in columns]
    return [separator.join(p for p in row if p.strip()) for row in zip(*parts, strict=True)]


def file_text(path: Path, content: bytes, encoding: str | None) -> str:
    """A text file's text: an .eml e-mail's subject and body, other files decoded. Raises Undecodable."""
    from components.kinds.text_files import decode, email_text

    return email_text(content) if path.suffix.lower() == ".eml" else decode(content, encoding)


def read_folder(root: Path, data: Data, cfg: Clean) -> Cleaned:
    """root/<class>/*.txt|*.eml, decoded; other and undecodable files dropped (or fail: clean.on_bad_file)."""
    from components.kinds.images import read_image_folder
    from components.kinds.text_files import Undecodable

    files, stray, skipped = read_image_folder(root, cfg.follow_symlinks, shown_as=Path(data.path))
    texts, labels, ids, dropped = [], [], [], list(stray)
    for path, label, content in files:
        suffix = Path(path).suffix.lower()
        try:
            if suffix not in TEXT_SUFFIXES:
                raise Undecodable(f"not a text file ({', '.join(TEXT_SUFFIXES)})")
            text = file_text(Path(path), content, data.csv.encoding)
        except Undecodable as exc:
            reason = "unsupported_file" if suffix not in TEXT_SUFFIXES else "undecodable"
            if cfg.on_bad_file == "fail":
                raise UserError(
                    f"{path}: {exc}; fix or remove the file, set data.csv.encoding, or set clean.on_bad_file: drop"
                ) from None
            dropped.append({"id": path, "reason": reason, "detail": f"{exc}; remove it or set data.csv.encoding"})
            continue
        texts.append(text)
        labels.append(label)
        ids.append(path)
    if not texts:
        raise UserError(f"{root}: no readable {'/'.join(TEXT_SUFFIXES)} files in its class sub-folders")
    cleaned = Cleaned(labels, ids, pd.DataFrame({COLUMN: texts}), dropped=dropped, skipped=skipped)
    cleaned.n_input = len(files) + len(stray)
    return cleaned


def clean_texts(cleaned: Cleaned, cfg: Clean, source: Path) -> None:
    """NFC and strip; drop empty and too short texts; cut texts longer than clean.max_chars (counted in the
    report); drop duplicates (the first copy is kept; a copy with another label is reported as a conflict).
    Raises UserError naming source when no text is left."""
    from components.kinds.text_files import normalised, whitespace_key

    texts = [normalised(t) for t in cleaned.features[COLUMN]]
    cleaned.features = pd.DataFrame({COLUMN: texts})
    lengths = np.array([len(t) for t in texts])
    cleaned.keep(lengths > 0, "empty_text", "empty or only whitespace")
    lengths = np.array([len(t) for t in cleaned.features[COLUMN]])
    cleaned.keep(lengths >= cfg.min_chars, "too_short", f"fewer than clean.min_chars = {cfg.min_chars} characters")
    if not len(cleaned.ids):
        empty, short = (sum(d["reason"] == reason for d in cleaned.dropped) for reason in ("empty_text", "too_short"))
        raise UserError(
            f"{source}: no texts left after cleaning ({empty} empty, {short} shorter than clean.min_chars "
            f"{cfg.min_chars}); check data.text"
        )
    # Cut before looking for duplicates: two texts alike in their first max_chars are one text to the model.
    long = np.array([len(t) > cfg.max_chars for t in cleaned.features[COLUMN]], dtype=bool)
    if long.any():
        cleaned.features[COLUMN] = [t[: cfg.max_chars] for t in cleaned.features[COLUMN]]
        cleaned.modified["truncated_to_max_chars"] = int(long.sum())
    keys = pd.Series([whitespace_key(t) for t in cleaned.features[COLUMN]])
    first = keys.groupby(keys, sort=False).cumcount() == 0
    first_at = dict(zip(keys[first], np.flatnonzero(first.to_numpy()), strict=True))
    repeat = np.flatnonzero(~first.to_numpy())
    conflict = np.array([cleaned.labels[first_at[keys[i]]] != cleaned.labels[i] for i in repeat], dtype=bool)
    for reason, rows in (("duplicate", repeat[~conflict]), ("duplicate_conflicting_label", repeat[conflict])):
        mask = np.zeros(len(keys), dtype=bool)
        mask[rows] = True
        if rows.size:
            details = [
                f"same text (whitespace aside) as {cleaned.ids[first_at[keys[i]]]}"
                + (f", which is labelled {shorten(cleaned.labels[first_at[keys[i]]])}" if reason != "duplicate" else "")
                for i in rows
            ]
            cleaned.record(mask, reason, details)
    cleaned.select(first.to_numpy())


def save_clean(folder: Path, cleaned: Cleaned, labels: np.ndarray, classes: list[str]) -> None:
    """texts.parquet: text, _label (int64), _id (row number or file path, as text)."""
    frame = cleaned.features.assign(_label=labels, _id=pd.Series(cleaned.ids).astype(str))
    with atomic_path(folder / "texts.parquet") as tmp:
        frame.to_parquet(tmp, index=False)


def load_clean(folder: Path) -> dict:
    frame = read_parquet(folder / "texts.parquet")
    return {
        "features": frame[[COLUMN]],
        "labels": frame["_label"].to_numpy(),
        "ids": frame["_id"].to_numpy().astype(str),
    }


# ---------------------------------------------------------------- preprocessing


@dataclass
class TextPreprocessor:
    """A tokenizer with truncation and padding to max_length set; transform gives int64 (n, max_length)."""

    tokenizer: Tokenizer
    max_length: int
    pad_id: int
    max_chars: int
    special_ids: list[int] = field(default_factory=list)  # never deleted or swapped by augmentation
    origin: str = "fitted on the train split"

    def settings(self) -> dict:
        return {
            "max_length": self.max_length,
            "pad_id": self.pad_id,
            "max_chars": self.max_chars,
            "special_ids": self.special_ids,
            "vocab_size": self.tokenizer.get_vocab_size(),
            "origin": self.origin,
        }


def fit(train: pd.DataFrame, meta: dict, params: Params) -> tuple[TextPreprocessor, list[dict]]:
    """bilstm: a WordPiece tokenizer trained on the train split's texts only (text.vocab_size, min_frequency,
    lowercase); transformer: train.pretrained's own tokenizer, checked against its model. Every text is kept."""
    require_text_extra()
    cfg = params.text
    if params.train.arch == "transformer":
        assert params.train.pretrained  # the params schema requires it
        tokenizer, pad_id, specials = checkpoint_tokenizer(params.train.pretrained, cfg.max_length)
        origin = f"the tokenizer of {params.train.pretrained}"
    else:
        tokenizer, pad_id, specials = wordpiece(train[COLUMN].tolist(), cfg), 0, [0]
        origin = "WordPiece fitted on the train split"
    tokenizer.enable_truncation(cfg.max_length)
    pad_token = tokenizer.id_to_token(pad_id) or "[PAD]"
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=cfg.max_length)
    return TextPreprocessor(tokenizer, cfg.max_length, pad_id, meta["max_chars"], specials, origin), []


def wordpiece(texts: list[str], cfg) -> Tokenizer:
    """A BERT-style WordPiece tokenizer (Hugging Face tokenizers) trained on `texts`: [PAD] = 0, [UNK] = 1."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase, strip_accents=None)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    # The trainer numbers each "##" piece (a character inside a word) as it meets it in a hash map, whose order
    # differs in every process, and breaks ties between equally frequent merges by those numbers: the same texts
    # gave another vocabulary in every run (huggingface/tokenizers#1794). Passed as special tokens, the pieces
    # are numbered first, in character order, and training is a function of the texts.
    inner: set[str] = set()
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
            inner.update(word[1:])
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIALS + [f"##{c}" for c in sorted(inner)],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # ...and stay ordinary vocabulary: not matched in raw text, nor skipped when decoding, as special tokens are.
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [token for token in spec["added_tokens"] if token["content"] in SPECIALS]
    return Tokenizer.from_str(json.dumps(spec))


def checkpoint_tokenizer(pretrained: str, max_length: int) -> tuple[Tokenizer, int, list[int]]:
    """(the fast tokenizer, its pad id, its special token ids) of a transformers checkpoint, after checking it
    fits the checkpoint's model: its ids within the embedding, max_length within the position embeddings.
    Raises UserError naming train.pretrained and what to fix."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    config = checkpoint_config(pretrained)
    local = Path(pretrained).expanduser()
    if local.is_dir():
        # Without them transformers builds an empty tokenizer from config.json alone (5 tokens) and loads no
        # weights: a model would train on [UNK]s, or fail only at the train stage.
        if not any((local / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer.model")):
            raise UserError(
                f"train.pretrained {pretrained}: no tokenizer files (tokenizer.json); copy the checkpoint's "
                "own tokenizer files into it"
            )
        if not any(local.glob("*.safetensors")):
            raise UserError(
                f"train.pretrained {pretrained}: no weights in safetensors form (model.safetensors); pickled "
                "weights (pytorch_model.bin) are not loaded: convert them, or use another checkpoint"
            )
    try:
        loaded = AutoTokenizer.from_pretrained(pretrained)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"train.pretrained {pretrained}: its tokenizer cannot be loaded ({str(exc).splitlines()[0][:120]}); "
            "a checkpoint needs tokenizer.json (or the files its tokenizer is built from)"
        ) from None
    if not loaded.is_fast or loaded.pad_token_id is None:
        raise UserError(f"train.pretrained {pretrained}: needs a fast tokenizer (tokenizer.json) with a pad token")
    tokenizer = Tokenizer.from_str(loaded.backend_tokenizer.to_str())
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > config.vocab_size:
        raise UserError(
            f"train.pretrained {pretrained}: its tokenizer has {size} tokens but its model's embedding only "
            f"{config.vocab_size}: the tokenizer is not this model's; use the checkpoint's own tokenizer files"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise UserError(f"params.yaml: text.max_length {max_length} exceeds {pretrained}'s {positions} positions")
    return tokenizer, int(loaded.pad_token_id), sorted(set(loaded.all_special_ids) - {loaded.unk_token_id})


def checkpoint_config(pretrained: str):
    """The transformers config of train.pretrained (a local folder, or a hub id where the network allows).
    Raises UserError when it is neither a readable checkpoint folder nor downloadable."""
    from transformers import AutoConfig

    local = Path(pretrained).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise UserError(
            f"train.pretrained {pretrained}: not a transformers checkpoint folder (no config.json); give the folder "
            "holding config.json, model.safetensors and tokenizer.json, e.g. models/all-MiniLM-L6-v2"
        )
    # A path in a folder that exists (models/all-MiniLM-L6-v2 before `make setup-text`, an absolute path) names a
    # missing folder, not a hub id: asking the hub would retry for half a minute offline, logging each retry.
    if not local.exists() and (
        (len(local.parts) > 1 and local.parent.is_dir()) or pretrained.startswith((".", "/", "~"))
    ):
        raise UserError(
            f"train.pretrained {pretrained}: no such folder in {local.parent}; export the shipped checkpoint with "
            "`make setup-text`, or give a Hugging Face hub id (namespace/name)"
        )
    try:
        return AutoConfig.from_pretrained(str(local) if local.exists() else pretrained)
    except (OSError, ValueError) as exc:
        if local.exists():
            raise UserError(
                f"train.pretrained {pretrained}: its config.json is not a transformers config "
                f"({type(exc).__name__}); use the checkpoint's own config.json"
            ) from None
        raise UserError(
            f"train.pretrained {pretrained}: no such folder, and not a Hugging Face hub id that can be downloaded "
            f"here ({type(exc).__name__}); export the shipped checkpoint with `make setup-text`"
        ) from None


def transform(preprocessor: TextPreprocessor, raw, source: str = "input") -> np.ndarray:
    """Raw texts (a DataFrame with a `text` column, a Series, or a list of str) -> token ids int64
    (n, max_length). Each text is made NFC, stripped and cut to max_chars first, as clean did."""
    from components.kinds.text_files import normalised

    texts = [normalised(t, preprocessor.max_chars) for t in raw_texts(raw, source)]
    empty = sum(not t for t in texts)
    if empty:
        log.warning(
            "%s: %d of %d texts are empty; the model was trained on none, its answer means little",
            source,
            empty,
            len(texts),
        )
    encoded = preprocessor.tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64).reshape(len(texts), preprocessor.max_length)
    return ids


def raw_texts(raw, source: str) -> list[str]:
    """The texts of raw input as a list of str. Raises UserError naming the row that is not a string."""
    if isinstance(raw, pd.DataFrame):
        if COLUMN not in raw.columns and len(raw.columns) != 1:
            raise UserError(f"{source}: no column {COLUMN!r} (got {shorten(list(raw.columns))}); give the texts there")
        raw = raw[COLUMN] if COLUMN in raw.columns else raw.iloc[:, 0]
    if isinstance(raw, str):
        raw = [raw]
    texts = list(raw)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"{source}: row {bad} is {shorten(texts[bad])}, not a string; this model takes texts")
    return texts


def request_input(inputs: list | dict[str, np.ndarray]) -> list[str]:
    """Texts from a request (v1 `instances`: strings, or {"text": string} objects; v2: one BYTES tensor, named
    "text" where there are several) -> a list of str. Raises UserError naming the item that is no text."""
    field = "instances"
    if isinstance(inputs, dict):
        name = COLUMN if COLUMN in inputs else next(iter(inputs), None)
        if name is None or (len(inputs) > 1 and COLUMN not in inputs):
            raise UserError(f"inputs: give one BYTES tensor named {COLUMN!r} with the texts")
        field = f"inputs[{name!r}]"
        try:
            texts = [v.decode("utf-8") if isinstance(v, bytes) else v for v in np.asarray(inputs[name]).reshape(-1)]
        except UnicodeDecodeError:
            raise UserError(f"{field}: a text is not UTF-8; send the texts as UTF-8 strings") from None
    else:
        texts = [item[COLUMN] if isinstance(item, dict) and COLUMN in item else item for item in inputs]
    return raw_texts(texts, field)


def save_preprocessing(folder: Path, preprocessor: TextPreprocessor) -> None:
    """tokenizer.json (the tokenizers library's own JSON: vocabulary and rules, no code) and text.json."""
    with atomic_path(folder / "tokenizer.json") as tmp:
        tmp.write_text(preprocessor.tokenizer.to_str())
    write_json(folder / "text.json", preprocessor.settings())


def require_text_extra() -> None:
    """Raises UserError saying how to install tokenizers and transformers when they are missing."""
    import importlib.util

    missing = [name for name in ("tokenizers", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"data.kind text needs {' and '.join(missing)}: run `make setup-text` (pip install -e '.[text]')"
        )


def load_preprocessing(folder: Path) -> TextPreprocessor:
    require_text_extra()
    from tokenizers import Tokenizer

    settings = read_json(folder / "text.json")
    try:
        tokenizer = Tokenizer.from_str((folder / "tokenizer.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{folder / 'tokenizer.json'}: not found; rerun normalise") from None
    except Exception as exc:  # noqa: BLE001 - the Rust library raises its own Exception for any bad JSON
        raise UserError(f"{folder / 'tokenizer.json'}: not a tokenizer ({str(exc)[:80]}); rerun normalise") from None
    return TextPreprocessor(
        tokenizer,
        settings["max_length"],
        settings["pad_id"],
        settings["max_chars"],
        settings["special_ids"],
        settings["origin"],
    )


# ---------------------------------------------------------------- augmentation


def augment(
    train: dict[str, np.ndarray], preprocessor: TextPreprocessor, cfg: Augment, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The train split's token ids plus augment.copies copies of each text, every copy with its tokens deleted
    with probability augment.token_deletion (one token is always left) and round(token_swap * length) swaps
    of two random tokens (Wei & Zou 2019, "EDA", its random deletion and random swap). Special tokens
    ([CLS], [SEP], padding) stay where they are. Seeded: the same seed gives the same copies."""
    x, labels = train["x"], train["y"]
    if cfg.copies == 0:
        return x, labels
    rng = np.random.default_rng(seed)
    special = np.isin(x, [preprocessor.pad_id, *preprocessor.special_ids])
    copies = [x]
    for _ in range(cfg.copies):
        batch = np.full_like(x, preprocessor.pad_id)
        for i, (row, fixed) in enumerate(zip(x, special, strict=True)):
            batch[i] = edited(row, fixed, cfg, rng, preprocessor.pad_id)
        copies.append(batch)
    return np.concatenate(copies), np.concatenate([labels] * (cfg.copies + 1))


def generator_space(train: dict[str, np.ndarray], preprocessor: TextPreprocessor) -> GeneratorSpace:
    """No generator is made for token ids (params.py refuses augment.generator with data.kind text)."""
    raise UserError("augment.generator: cvae makes images and table rows, not texts; set augment.generator: none")


def edited(row: np.ndarray, fixed: np.ndarray, cfg: Augment, rng: np.random.Generator, pad_id: int) -> np.ndarray:
    """One text's ids (L,) with random deletions and swaps among its non-special tokens, re-padded to L."""
    words = row[~fixed]
    keep = rng.random(len(words)) >= cfg.token_deletion
    if len(words) and not keep.any():
        keep[rng.integers(len(words))] = True
    words = words[keep]
    for _ in range(int(round(cfg.token_swap * len(words)))):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    leading = row[: np.argmax(~fixed)] if (~fixed).any() else row[:0]  # e.g. [CLS]
    trailing = row[fixed & (row != pad_id)][len(leading) :]  # e.g. [SEP]
    out = np.full_like(row, pad_id)
    joined = np.concatenate([leading, words, trailing])[: len(row)]
    out[: len(joined)] = joined
    return out


# ---------------------------------------------------------------- network


def is_model_input(x: np.ndarray) -> bool:
    """Texts reach the network as token ids, int64 (n, max_length)."""
    return x.ndim == 2 and x.dtype == np.int64


def network_config(x_shape: tuple[int, ...], classes: list[str], params: Params) -> dict:
    """bilstm: its sizes (text.*); transformer: the checkpoint's config.json, so that the served model is built
    from the saved config alone, and the head's dropout (the checkpoint's hidden_dropout_prob, as transformers'
    BertForSequenceClassification uses)."""
    if params.train.arch == "transformer":
        assert params.train.pretrained  # the params schema requires it
        config = checkpoint_config(params.train.pretrained)
        return {
            "arch": "transformer",
            "hf_config": json.loads(config.to_json_string(use_diff=False)),
            "pad_id": int(config.pad_token_id or 0),
            "dropout": float(getattr(config, "hidden_dropout_prob", 0.1)),
            "classes": classes,
        }
    if params.train.arch != "bilstm":
        raise UserError(f"train.arch {params.train.arch!r} is not a text network; use bilstm or transformer")
    text = params.text
    return {
        "arch": "bilstm",
        "vocab_size": text.vocab_size,
        "pad_id": 0,
        "embedding_dim": text.embedding_dim,
        "hidden_size": text.hidden_size,
        "dropout": text.dropout,
        "classes": classes,
    }


def build_network(config: dict, params: Params | None = None) -> torch.nn.Module:
    """With params (training): a transformer starts from train.pretrained's weights, train.freeze_layers fixed.
    Without (a saved model): built from the config alone, for the saved weights to be loaded into."""
    from components.kinds.text_networks import (
        BiLSTMClassifier,
        EncoderClassifier,
        encoder_from_config,
        freeze,
        pretrained_encoder,
    )

    n_classes = len(config["classes"])
    if config["arch"] == "bilstm":
        return BiLSTMClassifier(
            config["vocab_size"],
            n_classes,
            config["embedding_dim"],
            config["hidden_size"],
            config["dropout"],
            config["pad_id"],
        )
    try:
        if params is None:
            encoder = encoder_from_config(config["hf_config"])
        else:
            assert params.train.pretrained  # the params schema requires it
            encoder = pretrained_encoder(params.train.pretrained)
            freeze(encoder, params.train.freeze_layers)
    except ImportError:
        raise UserError("train.arch transformer needs transformers: pip install -e '.[text]'") from None
    return EncoderClassifier(encoder, n_classes, config["dropout"], config["pad_id"])


def example_lengths(x: np.ndarray, config: dict) -> np.ndarray | None:
    """Tokens per text (int64 (n,)), for length-bucketed batches."""
    return (x != config["pad_id"]).sum(axis=1)


def signature_input(raw: pd.DataFrame) -> pd.DataFrame:
    """The `text` column, named: MLflow then refuses input without it (a list of str too) with a clear message.
    An unnamed string column would take a list, but MLflow scores the first column of any DataFrame given
    for it: the training table's subject and body columns would be scored as the subject alone, silently."""
    return raw[[COLUMN]]


# ---------------------------------------------------------------- batch prediction


def read_input(
    source: Path, meta: dict, preprocessor: TextPreprocessor, overrides: dict[str, str]
) -> tuple[list[str], pd.DataFrame]:
    """A folder of .txt/.eml files (any depth; ids the paths) or a table file with the model's text column(s)
    (read with its CSV settings, overrides: --csv KEY=VALUE; ids the row numbers from 0): (ids, texts)."""
    from components.kinds.text_files import Undecodable

    encoding = overrides.get("encoding") or (meta.get("csv") or {}).get("encoding")
    if source.is_dir():
        from components.image_files import list_files

        paths = [p for p in list_files(source)[0] if p.suffix.lower() in TEXT_SUFFIXES]
        if not paths:
            raise UserError(f"{source}: no {'/'.join(TEXT_SUFFIXES)} files found")
        texts = []
        for path in paths:
            try:
                content = path.read_bytes()
                texts.append(file_text(path, content, encoding))
            except Undecodable as exc:
                raise UserError(f"{path}: {exc}; remove it, or pass --csv encoding=...") from None
            except OSError as exc:
                raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
        return [str(p) for p in paths], pd.DataFrame({COLUMN: texts})
    from components.kinds.tables import csv_settings
    from components.table_files import Advice, read_table

    table = read_table(source, None, csv_settings(meta.get("csv") or {}, overrides), Advice(command_line=True))
    wanted = meta.get("text") or COLUMN
    columns = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [c for c in columns if c not in table.frame.columns]
    if missing:
        raise UserError(f"{source}: no column {shorten(missing[0])}; the model reads its texts from {columns}")
    separator = meta.get("text_separator") or "\n\n"
    texts = joined_texts(table.frame, columns, separator)
    return [str(i) for i in range(len(texts))], pd.DataFrame({COLUMN: texts})
