"""Position-wise feed-forward network: plain (GELU/ReLU) or gated (SwiGLU / GeGLU)."""

from __future__ import annotations

import torch
from torch import nn

from .linear import ACTIVATIONS, Linear, linear_act

__all__ = ["ACTIVATIONS", "MLP"]


class MLP(nn.Module):
    """fc_out(act(fc_in(x)))  or, gated,  fc_out(act(fc_in(x)) * fc_gate(x))."""

    def __init__(self, d_model: int, d_ff: int, activation: str, gated: bool, bias: bool, dropout: float):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        self.activation = activation
        self.fc_in = Linear(d_model, d_ff, bias=bias)
        self.fc_gate = Linear(d_model, d_ff, bias=bias) if gated else None
        self.fc_out = Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        h = linear_act(x, self.fc_in, self.activation)  # (B, T, d_ff)
        if self.fc_gate is not None:
            h = h * self.fc_gate(x)
        y = self.fc_out(h)
        return self.dropout(y) if self.training else y
