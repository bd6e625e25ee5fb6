"""Position-wise feed-forward network: plain (GELU/ReLU) or gated (SwiGLU / GeGLU)."""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import ACTIVATIONS, Linear, linear_act

__all__ = ["ACTIVATIONS", "MLP", "gate"]


def gate(ag: torch.Tensor, activation: str) -> torch.Tensor:
    """act(a) * g of a fused gate|up output ag (..., 2 d_ff), a its first half -> (..., d_ff).
    SiLU on bf16 CPU inference in one native call (``nn.native.silu_gate``, the same rounding as
    the three operations it replaces, which took 50-90 us a decoding step's layer); otherwise
    split, activation, product."""
    if (activation == "silu" and ag.dtype == torch.bfloat16 and ag.device.type == "cpu" and ag.is_contiguous()
            and not (torch.is_grad_enabled() and ag.requires_grad) and native.silu_gate_available()):
        return native.silu_gate(ag)
    a, g = ag.chunk(2, dim=-1)  # 2 x (..., d_ff)
    return ACTIVATIONS[activation](a) * g


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
            h = gate(self.fc_in_gate(x), self.activation)  # (B, T, 2 d_ff) -> (B, T, d_ff)
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
        layer). ``nn.quant.GGUFLinear.stacked`` and ``Int4Linear.stacked`` make such a layer."""
        if self.fc_gate is None:
            raise ValueError("fuse_gate needs a gated MLP (fc_gate)")
        self.fc_in_gate, self.fc_in, self.fc_gate = fused, None, None
