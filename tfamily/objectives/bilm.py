"""Bidirectional language modelling (ELMo): at every position, the forward LM predicts the next
token and the backward LM the previous one; the loss is the mean of the two cross-entropies.

    window   x0 x1 x2 x3 x4          (B, T+1), from the same text windows as causal LM
    inputs   x0 x1 x2 x3             (B, T)
    next     x1 x2 x3 x4             forward targets
    previous  -  x0 x1 x2            backward targets (position 0 has none: IGNORE_INDEX)
"""

from __future__ import annotations

import torch

from .base import IGNORE_INDEX, Batch, token_cross_entropy


class BiLMObjective:
    defer_head = True  # both heads are applied by the loss, chunk by chunk

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def prepare(self, windows: torch.Tensor) -> Batch:
        """windows (B, T+1) -> inputs ids (B, T); targets (B, T, 2): [next, previous]."""
        if windows.dim() != 2 or windows.shape[1] < 3:
            raise ValueError(f"bidirectional LM needs (batch, T+1) windows with T >= 2, got {tuple(windows.shape)}")
        ids = windows[:, :-1]
        previous = torch.cat([torch.full_like(ids[:, :1], IGNORE_INDEX), ids[:, :-1]], 1)
        return Batch({"ids": ids}, torch.stack([windows[:, 1:], previous], -1))

    def loss(self, output, batch: Batch) -> torch.Tensor:
        """Mean of the forward (next-token) and backward (previous-token) cross-entropies."""
        ahead = token_cross_entropy(output, batch.targets[..., 0], self.label_smoothing)
        back = token_cross_entropy(output.backward, batch.targets[..., 1], self.label_smoothing)
        return (ahead + back) / 2
