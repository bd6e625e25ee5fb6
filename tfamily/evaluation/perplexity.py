"""Perplexity of a causal LM on a token stream, with a sliding window.

The stream is scored in windows of the model's context. Each window after the first
starts ``stride`` tokens after the previous one and scores only the tokens the previous
window did not, so every token is predicted exactly once with up to
``context - stride`` tokens of history:

    window 1: [t0 ........ t(C-1)]             scores t1 .. t(C-1)
    window 2:        [t(S) ........ t(S+C-1)]  scores t(C) .. t(S+C-1)

Bits per byte divide the total log-loss by the text's UTF-8 size, which makes models with
different tokenizers comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PerplexityResult:
    tokens: int  # tokens scored (all but the first)
    nll: float  # mean negative log-likelihood, nats per token
    bytes: int | None = None  # UTF-8 size of the text, when known

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    @property
    def bits_per_byte(self) -> float | None:
        if not self.bytes:
            return None
        return self.nll * self.tokens / self.bytes / math.log(2)


@torch.inference_mode()
def perplexity(model: nn.Module, ids: Sequence[int] | torch.Tensor, stride: int | None = None,
               batch_size: int = 8, text_bytes: int | None = None) -> PerplexityResult:
    """Mean NLL of ``ids`` under ``model`` (windows of the model's context, see module doc)."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    context = model.cfg.max_seq_len
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in 1..{context}, got {stride}")
    device = next(model.parameters()).device
    windows = _windows(ids.numel(), context, stride)  # (start, end, first scored position in window)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        width = max(end - start for start, end, _ in group)
        batch = torch.zeros(len(group), width, dtype=torch.long)
        targets = torch.full((len(group), width - 1), -100, dtype=torch.long)
        for row, (start, end, first) in enumerate(group):
            chunk = ids[start:end]
            batch[row, :len(chunk)] = chunk
            targets[row, first - 1:len(chunk) - 1] = chunk[first:]
        mask = torch.arange(width)[None, :] < torch.tensor([e - s for s, e, _ in group])[:, None]
        logits = model(batch.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        losses = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=-100, reduction="sum")
        total += losses.item()
        count += int((targets != -100).sum())
    return PerplexityResult(tokens=count, nll=total / count, bytes=text_bytes)


def _windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored index within the window) covering positions 1..n-1 once each."""
    out, scored_to = [], 1  # position 0 has no history and is never scored
    start = 0
    while scored_to < n:
        end = min(start + context, n)
        out.append((start, end, scored_to - start))
        scored_to = end
        # slide by stride, but keep at least one token of history before the first scored one
        start = min(start + stride, scored_to - 1, max(0, n - context))
    return out
