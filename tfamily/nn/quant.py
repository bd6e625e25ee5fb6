"""Weights in a smaller number format for inference: bf16, or int8 weight-only.

Decoding one token at a time reads every weight once per token and does little arithmetic
with it, so its speed follows the bytes of the weights: fp32 (4 bytes) -> bf16 (2) -> int8
(1 byte + one scale per output row). ``Int8Linear`` keeps each row of a weight matrix as
int8 with one scale (symmetric, absmax / 127) and multiplies bf16 activations by it with
torch's packed int8 matmul; activations, norms, embeddings and the KV cache stay bf16.

None of this is on by default: both formats change the model's outputs a little (see
benchmarks/RESULTS.md for the measured cost on a real model), so a user asks for them.

Whatever the format, ``convert_weights`` makes an inference-only model: on a CPU the fp32 and
bf16 linear layers become ``nn.linear.PackedLinear`` (the weight rearranged once into oneDNN's
own layout, which the matmuls read faster: 1.2-1.4x for decoding), with the same outputs
(identical in every comparison measured here). A tied LM head gets a packed copy of its
table, which the embedding lookups keep reading.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .linear import PackedLinear, packing_supported

WEIGHT_FORMATS = ("fp32", "bf16", "int8")


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times a per-row scale. x: (..., in) bf16."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        w = linear.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", linear.bias.detach().to(dtype) if linear.bias is not None else None)

    def dequantized(self) -> torch.Tensor:  # (out, in) in the scale's dtype: what the matmul multiplies by
        return self.weight_int8.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features).to(self.scale.dtype)  # (N, in)
        y = torch.ops.aten._weight_int8pack_mm(x, self.weight_int8, self.scale)  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int8_supported() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def convert_weights(model: nn.Module, fmt: str, pack: bool = True) -> nn.Module:
    """The model with its weights in ``fmt`` (in place, for inference): "fp32", "bf16", or
    "int8" (every nn.Linear, the LM head included, becomes an Int8Linear; the rest bf16).
    With ``pack`` (on a CPU with oneDNN), fp32 and bf16 linear layers become ``PackedLinear``:
    the same numbers, faster matmuls, no gradients. ``pack=False`` keeps ordinary layers."""
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, got {fmt!r}")
    model = model.float() if fmt == "fp32" else model.to(torch.bfloat16)
    if fmt == "int8":
        if not int8_supported():
            raise ValueError(f"int8 weights need torch's _weight_int8pack_mm (this torch is {torch.__version__})")
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"int8 weights run on the CPU kernels only; the model is on {device}")
        model.eval()
        _replace_linears(model, Int8Linear)
    elif pack and packing_supported(next(model.parameters())):
        model.eval()
        _replace_linears(model, PackedLinear)
    return model


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
        else:
            _replace_linears(child, make)
