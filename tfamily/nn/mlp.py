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
        self.fc_in_gate: nn.Module | None = None  # fc_in and fc_gate as one layer, after fuse_gate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        if self.fc_in_gate is not None:  # one matmul for both halves (fuse_gate)
            a, g = self.fc_in_gate(x).chunk(2, dim=-1)  # 2 x (B, T, d_ff)
            h = ACTIVATIONS[self.activation](a) * g
        else:
            h = linear_act(x, self.fc_in, self.activation)  # (B, T, d_ff)
            if self.fc_gate is not None:
                h = h * self.fc_gate(x)
        y = self.fc_out(h)
        return self.dropout(y) if self.training else y

    def fuse_gate(self, fused: nn.Module) -> None:
        """For inference: ``fused`` computes fc_in and fc_gate in one call (output: fc_in's d_ff
        columns, then fc_gate's), which then replaces both: one read of the input and one
        kernel call instead of two (measured for GGUF blocks: 383 -> 361 us a Qwen2.5-0.5B
        layer). ``nn.quant.GGUFLinear.stacked`` makes such a layer."""
        if self.fc_gate is None:
            raise ValueError("fuse_gate needs a gated MLP (fc_gate)")
        self.fc_in_gate, self.fc_in, self.fc_gate = fused, None, None
