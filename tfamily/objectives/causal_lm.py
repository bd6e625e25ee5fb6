"""Causal language modelling: predict token t+1 from tokens 0..t."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import IGNORE_INDEX, Batch, logits_of


class CausalLMObjective:
    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def prepare(self, windows: torch.Tensor) -> Batch:
        """windows: (B, T+1) token ids -> inputs (B, T), targets shifted by one (B, T)."""
        if windows.dim() != 2 or windows.shape[1] < 2:
            raise ValueError(f"causal LM needs (batch, T+1) windows with T >= 1, got {tuple(windows.shape)}")
        return Batch({"ids": windows[:, :-1]}, windows[:, 1:])

    def loss(self, output, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy in fp32 over all non-ignored targets. logits: (B, T, V)."""
        return F.cross_entropy(logits_of(output).flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)
