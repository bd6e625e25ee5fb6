"""Absolute position modules: position ids (B, T) in, embeddings (B, T, d) out.

Position ids, not a slice offset, are the input, so that left-padded batches and
cached decoding (ids continue from the cache length) use the same code path.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """A trained table of max_len vectors (GPT, BERT, BART)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, dim))

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d)
        return nn.functional.embedding(pos, self.weight)


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)  (Vaswani et al., 2017, §3.5)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoids (the original Transformer); a non-persistent buffer, no parameters."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoid_table(max_len, dim), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d)
        return nn.functional.embedding(pos, self.table)


def make_positions(kind: str, max_len: int, dim: int) -> nn.Module | None:
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(max_len, dim)
    if kind == "none":
        return None
    raise ValueError(f"unknown position kind {kind!r}")


def positions_from_mask(mask: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Position ids that skip padding: (B, T) bool mask (True = real token) -> (B, T) long.

    A left-padded row [pad pad a b c] gets positions [0 0 0 1 2], so the real tokens see
    the same positions as without padding. ``offset`` (int or (B, 1)) continues a cache.
    """
    pos = mask.long().cumsum(-1) - 1
    return (pos.clamp(min=0) + offset)
