"""Perplexity of a Transformer-XL model over a long text, segment by segment.

The token stream is cut into consecutive segments of ``segment_len`` tokens. Every token
but the first is predicted exactly once:

    segment 1: [t0 .. t(T-1)]   predicts t1 .. tT      recurrence: none
    segment 2: [tT .. t(2T-1)]  predicts t(T+1) .. t2T  recurrence: segment 1's hidden states
    ...

With ``use_recurrence`` the model carries its recurrence (the last ``mem_len`` positions' hidden
states per layer) from one segment to the next, as in Dai et al. 2019's evaluation; without
it every segment starts from nothing, which is what a fixed-context model scoring disjoint
segments sees. The two score the same tokens, so their losses compare directly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .perplexity import PerplexityResult


@torch.inference_mode()
def segment_perplexity(model: nn.Module, ids: Sequence[int] | torch.Tensor, segment_len: int | None = None,
                       mem_len: int | None = None, use_recurrence: bool = True,
                       text_bytes: int | None = None) -> PerplexityResult:
    """Mean NLL of ``ids`` (a 1-D stream) under a Transformer-XL ``model``.

    segment_len defaults to the model's ``max_seq_len`` (its training segment), mem_len to
    its ``mem_len``; the paper evaluates with longer memories than it trains with, and
    relative positions make that possible."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    segment_len = segment_len or model.cfg.max_seq_len
    if not 0 < segment_len <= model.cfg.max_seq_len:
        raise ValueError(f"segment_len must be in 1..{model.cfg.max_seq_len} (the model's max_seq_len), "
                         f"got {segment_len}")
    if mem_len is not None and mem_len < 0:
        raise ValueError(f"mem_len must be >= 0, got {mem_len}")
    device = next(model.parameters()).device
    stream = ids.to(device)
    recurrence = model.make_recurrence(1, mem_len) if use_recurrence else None
    total, count = 0.0, 0
    for start in range(0, stream.numel() - 1, segment_len):
        end = min(start + segment_len, stream.numel() - 1)
        inputs, targets = stream[start:end][None], stream[start + 1:end + 1]  # (1, T), (T,)
        logits = model(inputs, recurrence=recurrence).logits[0].float()  # (T, V)
        total += F.cross_entropy(logits, targets, reduction="sum").item()
        count += targets.numel()
    return PerplexityResult(tokens=count, nll=total / count, bytes=text_bytes)
