"""Fine-tuning heads: a dropout and one linear layer on the backbone's hidden states."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.linear import Linear


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """One vector per sequence: hidden (B, T, d), mask (B, T) True = real token -> (B, d).

    first: the first token ([CLS]); mean: the average of the real tokens (sentence embeddings);
    last: the last real token (a causal decoder has read the whole text only there, GPT-1 style).
    """
    if how == "first":
        return hidden[:, 0]
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    mask = mask.bool()
    if how == "mean":
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "last":
        t = hidden.shape[1]
        last = t - 1 - mask.flip(-1).to(torch.int64).argmax(-1)  # index of the last True in each row
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {how!r}; choose first, mean or last (or pooler)")


class SequenceClassificationHead(nn.Module):
    """Class logits (B, C) for a whole sequence, from its pooled vector (B, d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = Linear(cfg.d_model, cfg.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(pooled))


class TokenClassificationHead(nn.Module):
    """A label per token (B, T, C): named-entity tags."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = Linear(cfg.d_model, cfg.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(hidden))


class SpanHead(nn.Module):
    """Extractive question answering: a start and an end logit per token, (B, T, 2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = Linear(cfg.d_model, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)
