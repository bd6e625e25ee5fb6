"""Position-wise feed-forward network: plain (GELU/ReLU) or gated (SwiGLU / GeGLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """fc_out(act(fc_in(x)))  or, gated,  fc_out(act(fc_in(x)) * fc_gate(x))."""

    def __init__(self, d_model: int, d_ff: int, activation: str, gated: bool, bias: bool, dropout: float):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        h = self.act(self.fc_in(x))  # (B, T, d_ff)
        if self.fc_gate is not None:
            h = h * self.fc_gate(x)
        return self.dropout(self.fc_out(h))
