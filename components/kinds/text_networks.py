"""The two text networks (data.kind text). Both take token ids, int64 (n, max_length), right-padded with the
tokenizer's pad id, and return logits float32 (n, classes).

Dynamic padding: each forward pass first cuts the batch to its longest text, so a batch of short texts
costs what short texts cost, not max_length (train's length-bucketed batches make most batches short).
`dynamic_padding = False` keeps every batch at max_length: only benchmarks/text_train.py turns it off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def trimmed(ids: torch.Tensor, pad_id: int, dynamic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with the padding columns beyond the longest text of the batch removed; mask bool (n, L)."""
    mask = ids != pad_id
    if dynamic and ids.shape[1]:
        longest = int(mask.sum(dim=1).max().clamp(min=1))  # one host sync per batch
        ids, mask = ids[:, :longest], mask[:, :longest]
    return ids, mask


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of states (n, L, d) over the positions where mask (n, L) is True: (n, d)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM over the packed (unpadded) sequences -> mean and max pooling over the
    real tokens -> dropout -> linear. Packing keeps padding out of the recurrence, so a text's prediction
    does not depend on how much padding its batch has."""

    def __init__(self, vocab_size: int, n_classes: int, embedding_dim: int, hidden_size: int, dropout: float, pad_id=0):
        super().__init__()
        self.pad_id, self.dynamic_padding = pad_id, True
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden_size, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids, mask = trimmed(ids, self.pad_id, self.dynamic_padding)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()  # pack_padded_sequence takes lengths on the CPU
        packed = nn.utils.rnn.pack_padded_sequence(
            self.dropout(self.embedding(ids)), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = self.lstm(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])
        mask = mask | (torch.arange(ids.shape[1], device=ids.device) == 0)  # an all-padding text keeps one step
        maxed = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.head(self.dropout(torch.cat([masked_mean(states, mask), maxed], dim=1)))


class EncoderClassifier(nn.Module):
    """A pretrained Transformer encoder (transformers' AutoModel) -> mean of the last hidden states over the
    real tokens (the pooling all-MiniLM-L6-v2 was trained with) -> dropout -> linear."""

    def __init__(self, encoder: Any, n_classes: int, dropout: float, pad_id: int):
        super().__init__()
        self.pad_id, self.dynamic_padding = pad_id, True
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids, mask = trimmed(ids, self.pad_id, self.dynamic_padding)
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return self.head(self.dropout(masked_mean(states, mask)))


def encoder_from_config(hf_config: dict) -> nn.Module:
    """The encoder a saved config.json (as a dict) describes, randomly initialised: the trained weights are
    loaded over it. Nothing is downloaded and nothing unpickled. Raises ImportError without transformers."""
    from transformers import AutoConfig, AutoModel

    settings = dict(hf_config)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    return AutoModel.from_config(config)


def pretrained_encoder(pretrained: str) -> nn.Module:
    """The encoder of a checkpoint (folder or hub id) with its pretrained weights, from safetensors only."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(pretrained, use_safetensors=True)


def freeze(encoder: Any, layers: int) -> None:
    """Fix the embeddings and the first `layers` Transformer layers (BERT-style `encoder.layer` lists);
    0 fixes nothing."""
    if layers == 0:
        return
    try:
        embeddings, stack = encoder.embeddings, encoder.encoder.layer
    except AttributeError:
        from components.errors import UserError

        raise UserError(
            f"train.freeze_layers {layers}: this checkpoint ({type(encoder).__name__}) has no BERT-style "
            "embeddings and encoder.layer to freeze; set train.freeze_layers: 0"
        ) from None
    for parameter in embeddings.parameters():
        parameter.requires_grad_(False)
    for layer in stack[:layers]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
