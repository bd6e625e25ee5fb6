"""Sequence-to-sequence (translation): predict the target from the source, teacher-forced.

    source ids             ->  encoder input     a b c </s>
    target ids  x y z      ->  decoder input     <s> x y z
                               targets           x y z </s>

The decoder sees the target shifted right by one (starting from ``start_id``) and learns
to emit the next token, ending with ``eos_id``. Padding targets are IGNORE_INDEX.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.parallel import pad_batch
from .base import IGNORE_INDEX, Batch, token_cross_entropy


class Seq2SeqObjective:
    defer_head = True  # the loss applies the LM head itself, chunk by chunk (objectives.base.token_cross_entropy)

    def __init__(self, pad_id: int, start_id: int, eos_id: int, label_smoothing: float = 0.0,
                 source_eos: bool = True):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.pad_id, self.start_id, self.eos_id = pad_id, start_id, eos_id
        self.label_smoothing, self.source_eos = label_smoothing, source_eos

    def prepare(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Batch:
        """[(source ids, target ids), ...] -> inputs src_ids/src_mask (B, S), tgt_ids (B, T); targets (B, T)."""
        if not pairs:
            raise ValueError("a sequence-to-sequence batch needs at least one pair")
        src_ids, src_mask = pad_batch([s for s, _ in pairs], self.pad_id,
                                      suffix=self.eos_id if self.source_eos else None)
        tgt_in, _ = pad_batch([t for _, t in pairs], self.pad_id, prefix=self.start_id)
        targets, tgt_mask = pad_batch([t for _, t in pairs], self.pad_id, suffix=self.eos_id)
        targets = targets.masked_fill(~tgt_mask, IGNORE_INDEX)
        return Batch({"src_ids": src_ids, "tgt_ids": tgt_in, "src_mask": src_mask}, targets,
                     {"n_tokens": int(tgt_mask.sum())})

    def loss(self, output, batch: Batch) -> torch.Tensor:
        """Mean (label-smoothed) cross-entropy in fp32 over the real target tokens (B, T)."""
        return token_cross_entropy(output, batch.targets, self.label_smoothing)
