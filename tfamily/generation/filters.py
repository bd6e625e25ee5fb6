"""Sampling filters: logits in, logits out. Each is a small pure function on (B, V).

A filtered-out token gets -inf, so softmax gives it probability 0.
"""

from __future__ import annotations

import torch


# Below these the fp32 filters break (logits / t overflows to inf; a top_p under fp32's smallest
# normal rounds to 0 and would drop every token: NaN probabilities), so they are read as their
# limits: temperature -> 0 (greedy, as vLLM does below 1e-5), top_p -> the most likely token only
# (what nucleus sampling keeps as p -> 0).
MIN_TEMPERATURE = 1e-5
MIN_TOP_P = 1e-6


def is_greedy(t: float) -> bool:
    """Whether temperature ``t`` means greedy decoding (0, or too small to divide by)."""
    return t < MIN_TEMPERATURE


def limits(t: float, k: int | None, p: float | None) -> tuple[float, int | None, float | None]:
    """(temperature, top_k, top_p) as the chain applies them: off where they do nothing
    (top_k 0, top_p 1), and the tiny values fp32 cannot compute with read as their limits."""
    t = 0.0 if is_greedy(t) else t
    k = k or None
    if p is not None and p < MIN_TOP_P:
        k, p = 1, None
    return t, k, (p if p is not None and p < 1 else None)


def chain(logits: torch.Tensor, t: float, k: int | None = None, p: float | None = None,
          seen: torch.Tensor | None = None, penalty: float = 1.0) -> torch.Tensor:
    """The one sampling chain, (B, V) fp32 logits -> the logits a token is drawn from: the
    repetition penalty (with ``seen``), then temperature, top-k and top-p, each under its
    ``limits``. Greedy (t = 0) keeps the most likely token alone. Used by decoding's ``pick``
    and by the server's view of one step's distribution, so the two never disagree."""
    logits = penalised(logits, seen, penalty)
    t, k, p = limits(t, k, p)
    if t == 0:
        return torch.full_like(logits, float("-inf")).scatter(-1, most_likely(logits)[..., None], 0.0)
    logits = temperature(logits, t)
    if k:
        logits = top_k(logits, k)
    if p is not None:
        logits = top_p(logits, p)
    return logits


def penalised(logits: torch.Tensor, seen: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """The chain's first link: the repetition penalty on the ``seen`` tokens, or the logits as they are."""
    return logits if seen is None else repetition_penalty(logits, seen, penalty)


def most_likely(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) -> (...,) index of the largest logit, the first of equal ones (what argmax
    returns). ``max`` rather than ``argmax``: over Qwen's 151,936 logits torch 2.13's CPU
    argmax took 218 us, ``max`` 70 us, a cost paid at every decoding step."""
    return logits.max(-1).indices


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
