"""Sampling filters: logits in, logits out. Each is a small pure function on (B, V).

A filtered-out token gets -inf, so softmax gives it probability 0.
"""

from __future__ import annotations

import torch


MIN_TEMPERATURE = 1e-5  # below this, logits / t overflows fp32: such a temperature is read as 0, greedy (as vLLM does)


def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Divide by t: t < 1 sharpens the distribution, t > 1 flattens it. (t = 0 means greedy; not here.)"""
    if t <= 0:
        raise ValueError(f"temperature must be > 0 here (0 is greedy), got {t}")
    return logits / t


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al., 2020): keep the smallest set of tokens whose
    probability mass reaches p. The most likely token is always kept."""
    if p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = (cum - sorted_logits.softmax(-1)) >= p  # mass before this token already reaches p
    drop_sorted[..., 0] = False  # even when p is below fp32's resolution and rounds to 0
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019): tokens already in the sequence have positive
    logits divided by ``penalty`` and negative ones multiplied. seen: (B, V) bool."""
    if penalty == 1.0:
        return logits
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)
