"""The data kinds, by their `data.kind` value (also written into meta.json): the stages ask these modules for
everything that depends on what an example is. Adding a kind: docs/data-kinds.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from components.errors import UserError
from components.kinds import images, tables, text

if TYPE_CHECKING:
    from components.kinds.base import DataKind

KINDS: dict[str, DataKind] = {"image_folder": images, "tabular": tables, "text": text}


def get(name: str) -> DataKind:
    """The kind module for a data.kind value. Raises UserError naming data.kind and the known kinds."""
    if name not in KINDS:
        raise UserError(f"data.kind {name!r} is not a known data kind; use one of {', '.join(KINDS)}")
    return KINDS[name]


def for_model_input(x: np.ndarray) -> DataKind:
    """The kind whose network takes model input shaped like x (train sees only arrays). Raises UserError."""
    for kind in KINDS.values():
        if kind.is_model_input(x):
            return kind
    raise UserError(f"model input of shape {x.shape} ({x.dtype}) is no data kind's; rerun the stages before train")


def for_network(config: dict) -> DataKind:
    """The kind that builds the network a saved model config describes (by its "arch"). Raises UserError."""
    for kind in KINDS.values():
        if config.get("arch") in kind.NETWORKS:
            return kind
    raise UserError(f"model config arch {str(config.get('arch'))[:40]!r} is no data kind's network")


def serving_settings() -> tuple[str, ...]:
    """Every kind's SERVING_SETTINGS, in registry order, each once: the meta.json keys logged with any model."""
    return tuple(dict.fromkeys(key for kind in KINDS.values() for key in kind.SERVING_SETTINGS))
