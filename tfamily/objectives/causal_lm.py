"""Causal language modelling: predict token t+1 from tokens 0..t."""

from __future__ import annotations

import torch

from .base import Batch, token_cross_entropy


class CausalLMObjective:
    defer_head = True  # the loss applies the LM head itself, chunk by chunk (objectives.base.token_cross_entropy)

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def prepare(self, windows: torch.Tensor) -> Batch:
        """windows: (B, T+1) token ids -> inputs (B, T), targets shifted by one (B, T)."""
        if windows.dim() != 2 or windows.shape[1] < 2:
            raise ValueError(f"causal LM needs (batch, T+1) windows with T >= 1, got {tuple(windows.shape)}")
        return Batch({"ids": windows[:, :-1]}, windows[:, 1:])

    def loss(self, output, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy in fp32 over all non-ignored targets (B, T)."""
        return token_cross_entropy(output, batch.targets, self.label_smoothing)
