"""clean: read the raw data, drop what cannot be trained on, and report every dropped or changed row.

What is read and dropped depends on data.kind (components/kinds/): image folders drop unreadable,
oversized and duplicate images; tables drop rows without a target, duplicates and rows with missing
values (when asked). For every kind, classes too small for the stratified split are dropped (named,
with their counts) or fail. reports/clean.json also says how the data were read.

    python -m components.clean --out outputs/clean --report reports/clean.json
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from components import kinds
from components.errors import UserError, run_cli, shorten
from components.io import write_json
from components.kinds.base import Cleaned, class_counts
from components.params import Clean, Data, Split, load_params

log = logging.getLogger(__name__)


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
        raise UserError(
            f"{source}: the target has {len(counts)} distinct values in {len(cleaned.labels)} examples "
            f"(e.g. {examples}): a classifier needs at least {needed} examples per class; for a table, is "
            "data.target the column of class labels?"
        )
    small = {c: n for c, n in counts.items() if n < needed}
    if small and cfg.small_classes == "fail":
        name, n = sorted(small.items())[0]
        raise UserError(
            f"{source}: class {shorten(name)} has {n} examples, too few for the stratified "
            f"{split.val_fraction}/{split.test_fraction} val/test split (need {needed}); "
            "add examples, remove the class, or set clean.small_classes: drop"
        )
    if small:
        in_small = pd.Series(cleaned.labels, dtype=object).isin(list(small)).to_numpy()
        cleaned.keep(
            ~in_small,
            "small_class",
            lambda label: (
                f"class {shorten(label)} has {small[label]} examples, fewer "
                f"than the {needed} the stratified split needs"
            ),
        )
    cleaned.small_classes = dict(sorted(small.items()))
    classes = sorted(pd.unique(cleaned.labels))
    if len(classes) < 2:
        found = f"only class {shorten(classes[0])}" if classes else "no class"
        listed = ", ".join(f"{shorten(c)}: {n}" for c, n in sorted(small.items())[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        gone = f" ({listed}{more} dropped as too small)" if small else ""
        raise UserError(f"{source}: {found} left after cleaning{gone}; a classifier needs at least two classes")


# ---------------------------------------------------------------- stage


def clean_dataset(
    data: Data, cfg: Clean, split: Split, out_dir: Path, report_path: Path, root: Path | None = None
) -> dict:
    """Read data.path (or root), clean it as its kind does, write out_dir/meta.json, the kind's cleaned examples
    (e.g. images.npz, table.parquet) and the report."""
    source = root or Path(data.path)
    kind = kinds.get(data.kind)
    cleaned = kind.read_clean(source, data, cfg)
    drop_small_classes(cleaned, cfg, split, str(source))

    classes = sorted(pd.unique(cleaned.labels))
    labels = pd.Index(classes, dtype=object).get_indexer(cleaned.labels).astype(np.int64)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind.save_clean(out_dir, cleaned, labels, classes)
    write_json(out_dir / "meta.json", {"kind": data.kind, "classes": classes} | cleaned.settings)
    report = cleaned.report()
    write_json(report_path, report)
    log.info("kept %d of %d; dropped %s", report["n_kept"], cleaned.n_input, report["dropped_by_reason"] or "none")
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Read, validate and clean the raw data; report every drop.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, help="overrides data.path")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    data = params.data if args.data is None else params.data.model_copy(update={"path": str(args.data)})
    clean_dataset(data, params.clean, params.split, args.out, args.report)


if __name__ == "__main__":
    run_cli(main)
