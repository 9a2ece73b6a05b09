"""What a data kind (image folders, tables, ...) must provide, and the cleaned data it hands the clean stage.

The stages are the same for every kind: they ask the kind module named by `data.kind` (components.kinds.get)
for everything that depends on what an example is. A kind is a module whose functions match DataKind's
methods (without `self`). See docs/data-kinds.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from torch import nn

    from components.params import Augment, Clean, Data, Params


@dataclass
class Cleaned:
    """What a kind's read_clean kept, and what it dropped or skipped, with why."""

    labels: Any  # class label (str) of each kept example: a sequence, held as an object ndarray
    ids: Any  # file path (images) or row number (tables): a sequence, held as an ndarray
    features: Any = None  # the kept examples' inputs, one per label, as the kind keeps them (ndarray, DataFrame)
    settings: dict = field(default_factory=dict)  # written into meta.json: what serving reads input with
    n_input: int = 0  # examples read, kept or not
    dropped: list[dict] = field(default_factory=list)  # {"id", "reason", "detail"[, "column", "line"]}
    imputed: dict[str, int] = field(default_factory=dict)
    source_file: Any = None  # a file with .lines (line of each row), for dropped rows
    read: dict = field(default_factory=dict)  # how the file was read (tables)
    skipped: list[dict] = field(default_factory=list)  # hidden files, never read (images)
    small_classes: dict[str, int] = field(default_factory=dict)  # classes dropped as too small, with their size
    modified: dict[str, int] = field(default_factory=dict)  # examples kept but changed, by how (texts cut short)

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
        all, a list of texts (one per dropped example, in order), or a function of an example's label."""
        extra = {"column": column} if column else {}
        ids = self.ids[dropped]
        if callable(detail):
            details = [detail(label) for label in self.labels[dropped]]
        else:
            details = list(detail) if isinstance(detail, list) else [detail] * len(ids)
        lines = self.source_file.lines if self.source_file is not None and len(ids) else None  # found when needed
        if lines is None:
            self.dropped.extend(
                {"id": str(i), "reason": reason, "detail": d} | extra for i, d in zip(ids, details, strict=True)
            )
        else:
            self.dropped.extend(
                {"id": str(i), "line": int(lines[i]), "reason": reason, "detail": d} | extra
                for i, d in zip(ids, details, strict=True)
            )

    def select(self, mask: np.ndarray) -> None:
        """Keep only the examples where mask is True."""
        if mask.all():  # nothing to drop: spare a copy of a table that may take gigabytes
            return
        self.labels, self.ids = self.labels[mask], self.ids[mask]
        if isinstance(self.features, pd.DataFrame):
            self.features = self.features[mask].reset_index(drop=True)
        elif self.features is not None:
            self.features = self.features[mask]

    def report(self) -> dict:
        by_column: dict[str, Counter] = {}
        for d in self.dropped:
            if "column" in d:
                by_column.setdefault(d["reason"], Counter())[d["column"]] += 1
        return {
            "n_input": self.n_input,
            "n_kept": len(self.ids),
            "n_dropped": len(self.dropped),
            "n_skipped": len(self.skipped),
            "dropped_by_reason": dict(Counter(d["reason"] for d in self.dropped)),
            "dropped_by_column": {reason: dict(counts) for reason, counts in by_column.items()},
            "imputed_by_column": self.imputed,
            "small_classes_dropped": self.small_classes,
            **({"modified": self.modified} if self.modified else {}),
            "kept_per_class": dict(sorted(class_counts(self.labels).items())),
            "read": self.read,
            "dropped": self.dropped,
            "skipped": self.skipped,
        }


@dataclass
class GeneratorSpace:
    """What augment.generator fits on (components/generative.py), from a kind's generator_space: the train split's
    examples as float32 `x` ((n, c, h, w) in [0, 1] for images, (n, features) for tables), and `finish`, which
    turns generated examples of that form into model input (pixels rounded as uint8 images, then scaled; one-hot
    groups of a table's categories made one-hot again)."""

    x: np.ndarray
    finish: Callable[[np.ndarray], np.ndarray]


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Examples per class, counted in one hashing pass (a Counter loops in Python over every label)."""
    counts = pd.Series(labels, dtype=object).value_counts(dropna=False, sort=False)
    return {label: int(n) for label, n in counts.items()}


@runtime_checkable
class DataKind(Protocol):
    """One kind of data, from raw files to model input. `n` is the number of examples throughout; "raw" input
    is what the served model takes (pixels, table rows, texts), "model input" what the network takes (float32
    features, or int64 token ids).
    Errors in the data or the params are UserError (components/errors.py), one line naming the file/column."""

    NETWORKS: tuple[str, ...]  # the model config "arch" values build_network builds
    SERVING_SETTINGS: tuple[str, ...]  # keys of meta.json that read_input needs; logged with the registered model
    SERVING_PACKAGES: tuple[str, ...]  # distributions the served model imports beyond the core's (pinned with it)

    def read_clean(self, source: Path, data: Data, cfg: Clean) -> Cleaned:
        """Read the raw data at `source` (data.path, or where Kubeflow fetched it) and clean it: features
        (as save_clean writes them), str labels, ids, every dropped example with its reason, n_input and
        the meta.json settings. Raises UserError when nothing usable is found or a setting names nothing."""

    def save_clean(self, folder: Path, cleaned: Cleaned, labels: np.ndarray, classes: list[str]) -> None:
        """Write the cleaned examples into folder (beside meta.json). labels: int64 (n,), indices into classes."""

    def load_clean(self, folder: Path) -> dict:
        """What save_clean wrote: {"features": as in Cleaned, "labels": int64 (n,), "ids": str (n,)}; a dict
        so the caller can hand the features on without keeping a name for them (memory on big tables)."""

    def fit(self, train: Any, meta: dict, params: Params) -> tuple[Any, list[dict]]:
        """Fit the preprocessing on the train split's features (as load_clean gives them) only. meta: the clean
        stage's meta.json; params: the sections normalise reads (dvc.yaml lists them). Returns (preprocessor,
        train examples left out of the fit and of training:
        {"row": position in `train`, "reason", "detail", "column"}, e.g. outliers; usually none)."""

    def transform(self, preprocessor: Any, raw: Any, source: str = "input") -> np.ndarray:
        """Raw input (features of a split, or what a served model is given) -> model input (float32 features,
        or int64 token ids), first axis n. source names the input in errors (UserError for input the model
        cannot take)."""

    def save_preprocessing(self, folder: Path, preprocessor: Any) -> None:
        """Write the fitted preprocessing into folder as data (JSON, skops; never pickle), same bytes for the
        same fit (DVC hashes them). meta.json beside it is the caller's."""

    def load_preprocessing(self, folder: Path) -> Any:
        """What save_preprocessing wrote, loaded as data: a crafted file cannot run code. Raises UserError
        naming the file when it is missing, in an older (pickled) form or holds anything but data."""

    def augment(
        self, train: dict[str, np.ndarray], preprocessor: Any, cfg: Augment, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The train split (normalise's train.npz: "x" model input, "y" int64 (n,), "raw" where the kind keeps
        it) -> (model input float32 (m, ...), labels int64 (m,)) with the originals and augmented copies,
        seeded: the same seed gives the same arrays."""

    def generator_space(self, train: dict[str, np.ndarray], preprocessor: Any) -> GeneratorSpace:
        """The train split (as augment gets it) as augment.generator cvae models it, and the way back to model
        input. Raises UserError for a kind no generator is made for (text)."""

    def is_model_input(self, x: np.ndarray) -> bool:
        """Whether x (model input, first axis n) is shaped as this kind's: train sees only arrays."""

    def network_config(self, x_shape: tuple[int, ...], classes: list[str], params: Params) -> dict:
        """What rebuilds the network train.arch names for model input of shape x_shape (n first): JSON-able,
        with "arch" (one of NETWORKS) and "classes"; saved with the weights. Raises UserError for an arch
        this kind has no network for."""

    def build_network(self, config: dict, params: Params | None = None) -> nn.Module:
        """The network that network_config describes: model input -> logits float32 (n, classes). With params
        (training), as training starts it (e.g. from pretrained weights); without, for saved weights."""

    def example_lengths(self, x: np.ndarray, config: dict) -> np.ndarray | None:
        """The length of each example of model input x (int (n,)), for batches of similar lengths (less
        padding); None when all examples have the same size."""

    def signature_input(self, raw: Any) -> Any:
        """What the registered model's signature and input example are inferred from, given a few examples
        of raw input: raw itself, or another form of it that makes MLflow accept the input people give."""

    def read_input(
        self, source: Path, meta: dict, preprocessor: Any, overrides: dict[str, str]
    ) -> tuple[list[str], Any]:
        """Batch prediction: read new data at source as the training data were read (meta: the registered
        model's metadata, SERVING_SETTINGS among it; overrides: --csv KEY=VALUE reading options). Returns (an
        id per example, raw input for transform). Raises UserError naming the file, line or column."""

    def request_input(self, inputs: list | dict[str, np.ndarray]) -> Any:
        """Online serving (components/serve.py): raw input for transform from a request, either the Open
        Inference Protocol v1 `instances` (a JSON list, one item per example) or its v2 input tensors (name ->
        numpy array, first axis n; strings as bytes). Raises UserError naming the field and what it expected."""
