"""Weights in a smaller number format for inference: bf16, or int8 weight-only.

Decoding one token at a time reads every weight once per token and does little arithmetic
with it, so its speed follows the bytes of the weights: fp32 (4 bytes) -> bf16 (2) -> int8
(1 byte + one scale per output row). ``Int8Linear`` keeps each row of a weight matrix as
int8 with one scale (symmetric, absmax / 127) and multiplies bf16 activations by it: one row
(decoding at batch 1) with tfamily's own loop (``nn.native``: 1.4-3.3x torch's kernel there),
more rows with torch's packed int8 matmul; activations, norms, embeddings and the KV cache stay bf16.

``Int4Linear`` goes to 4 bits: groups of 32 weights along a row share a scale and a zero
(asymmetric, min / max), as llama.cpp's Q4_1 does, multiplied by torch's packed int4 CPU
kernel. It also holds a GGUF file's own 4-bit tensors (Q4_0, Q4_1, Q4_K) exactly as the file
has them (``interop.gguf``). A layer the kernel cannot take (out not a multiple of 16, in not
a multiple of 32) stays int8.

``GGUFLinear`` holds a GGUF file's quantised matrices (4-, 5-, 6- and 8-bit blocks with their
scales) as the file stores them and multiplies from them with tfamily's own kernel
(``nn.native.gguf_matmul``), where this CPU has one; ``interop.gguf`` chooses it for
``weights="gguf"``.

None of this is on by default: every format but fp32 changes the model's outputs a little (see
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
import torch.nn.functional as F
from torch import nn

from . import native
from .linear import PackedLinear, packing_supported

WEIGHT_FORMATS = ("fp32", "bf16", "int8", "int4")
INT4_GROUP = 32  # weights per scale / zero along a row, as GGUF's Q4_0, Q4_1 and Q4_K sub-blocks


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
        x = as_rows(x, self.in_features, self.scale.dtype)  # (N, in)
        if x.shape[0] <= native.INT8_MAX_ROWS and x.dtype == torch.bfloat16 and native.int8_available():
            y = native.int8_matvec(x, self.weight_int8, self.scale, self.bias)  # (N, out), bias included
        else:
            y = torch.ops.aten._weight_int8pack_mm(x, self.weight_int8, self.scale)  # (N, out)
            if self.bias is not None:
                y = y + self.bias
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(nn.Module):
    """y = x W^T + b with W stored as 4-bit codes; x: (..., in) in the scales' dtype (bf16).

    Along each row, every ``group`` weights share a scale s and a zero z (torch's int4 kernel's
    convention, which covers GGUF's 4-bit types exactly):

        W[o, i] = (q[o, i] - 8) * s[o, g] + z[o, g],   q in 0..15,   g = i // group

    The codes are packed two to a byte by ``_convert_weight_to_int4pack_for_cpu`` into the
    layout ``_weight_int4pack_mm_for_cpu`` reads; scales and zeros are kept as one
    (in / group, out, 2) tensor, which the kernel takes. 4 bits a weight plus 2 x 16 bits a
    group: 5 bits a weight at group 32.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        """codes (out, in) integers 0..15; scale, zero (out, in / group); bias (out,) or None."""
        super().__init__()
        out_features, in_features = codes.shape
        group = in_features // scale.shape[1]
        if not int4_fits(out_features, in_features, group) or scale.shape != zero.shape:
            raise ValueError(f"int4 layer of shape ({out_features}, {in_features}) with scales {tuple(scale.shape)} "
                             f"and zeros {tuple(zero.shape)}: needs out % 16 == 0, in % {group} == 0, "
                             "one scale and one zero per group")
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
        scales_and_zeros = torch.stack([scale.float().t(), zero.float().t()], dim=-1)  # (in / group, out, 2)
        self._hold(packed, scales_and_zeros.to(dtype).contiguous(),
                   bias.detach().to(dtype) if bias is not None else None, in_features, group)

    def _hold(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None,
              in_features: int, group: int) -> None:
        """Keep the kernel's operands: packed codes (out, in / 2) uint8, scales and zeros
        (in / group, out, 2), bias (out,) or None, all in their final dtypes."""
        self.in_features, self.out_features, self.group = in_features, packed.shape[0], group
        self.register_buffer("weight_int4", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16, group: int = INT4_GROUP) -> "Int4Linear":
        """Quantise ``linear``'s weight: each group's min and max map to codes 0 and 15."""
        codes, scale, zero = quantize_int4(linear.weight.detach().float(), group)
        return cls(codes, scale, zero, linear.bias, dtype)

    PACK_ROWS = 64  # torch 2.13's CPU packing interleaves the codes of 64 rows at a time (measured)

    @staticmethod
    def stackable(layers: list["Int4Linear"]) -> bool:
        """Whether ``stacked`` can join these: one input width, group and bias presence, and every
        layer but the last whole blocks of PACK_ROWS rows (so each block is packed as on its own)."""
        return (len({(layer.in_features, layer.group, layer.bias is None) for layer in layers}) == 1
                and all(layer.out_features % Int4Linear.PACK_ROWS == 0 for layer in layers[:-1]))

    @classmethod
    def stacked(cls, layers: list["Int4Linear"]) -> "Int4Linear":
        """One layer computing ``layers`` side by side (their outputs concatenated): one kernel
        call where a model made two (MLP.fuse_gate). Packed in whole blocks of rows, they are
        joined as they are, and the scales and zeros along their out axis."""
        first = layers[0]
        if not cls.stackable(layers):
            raise ValueError(f"stacked int4 layers need one input width, group and bias presence, and all but the "
                             f"last a multiple of {cls.PACK_ROWS} rows; got {[layer.extra_repr() for layer in layers]}")
        joined = cls.__new__(cls)  # its operands come packed already: no codes to pack again
        nn.Module.__init__(joined)
        joined._hold(torch.cat([layer.weight_int4 for layer in layers]),
                     torch.cat([layer.scales_and_zeros for layer in layers], dim=1),
                     None if first.bias is None else torch.cat([layer.bias for layer in layers]),
                     first.in_features, first.group)
        return joined

    def dequantized(self) -> torch.Tensor:
        """(out, in) in the scales' dtype: the matrix the kernel multiplies by (x @ I = the rows)."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)
        return self._mm(eye).t() if self.bias is None else (self._mm(eye) - self.bias).t()

    def _mm(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out), bias included
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight_int4, self.group, self.scales_and_zeros)
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self._mm(as_rows(x, self.in_features, self.scales_and_zeros.dtype))  # (N, out)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"bias={self.bias is not None}")


class GGUFLinear(nn.Module):
    """y = x W^T + b with W held as GGUF blocks, exactly as the file has them; x: (..., in) bf16.

    ``parts``: (kind, blocks) pairs stacked along the rows, each blocks a (rows, bytes a row)
    uint8 tensor of GGUF ``kind`` (nn.native.GGUF_BLOCKS). A fused layer (q|k|v) may mix kinds,
    as files do (Qwen2.5's v is often 8-bit where q and k are 5-bit). Up to
    ``native.GGUF_MAX_ROWS`` rows of x (decoding) are multiplied from the blocks, x rounded to
    int8 blocks on the way as llama.cpp does; more rows (a long prompt) dequantise W to bf16
    once per call and take one matmul, which is faster there. Only where
    ``native.gguf_available()``."""

    def __init__(self, parts: list[tuple[str, torch.Tensor]], in_features: int, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not parts:
            raise ValueError("a GGUFLinear needs at least one (kind, blocks) part")
        for kind, blocks in parts:
            native._check_blocks(blocks, kind, in_features)  # the kind, the width and the bytes fit together
        parts = _merge_kinds(parts)
        self.in_features = in_features
        self.kinds = tuple(kind for kind, _ in parts)
        self.codes = tuple(list(native.GGUF_BLOCKS).index(kind) for kind in self.kinds)  # the kernel's numbering
        self.rows = tuple(blocks.shape[0] for _, blocks in parts)
        self.out_features = sum(self.rows)
        self._names = tuple(f"blocks{i}" for i in range(len(parts)))
        for name, (_, blocks) in zip(self._names, parts):
            self.register_buffer(name, blocks.contiguous())
        if bias is not None and bias.shape != (self.out_features,):
            raise ValueError(f"bias of shape {tuple(bias.shape)} for {self.out_features} output rows")
        self.register_buffer("bias", bias.detach().to(dtype).contiguous() if bias is not None else None)

    @classmethod
    def stacked(cls, layers: list["GGUFLinear"]) -> "GGUFLinear":
        """One layer computing ``layers`` side by side (their outputs concatenated): one kernel
        call where a model made two (MLP.fuse_gate). Neighbouring parts of one kind are joined."""
        if len({layer.in_features for layer in layers}) != 1 or len({layer.bias is None for layer in layers}) != 1:
            raise ValueError("stacked GGUF layers need one input width and all or none with a bias")
        bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
        return cls([part for layer in layers for part in layer.parts()], layers[0].in_features, bias)

    def parts(self) -> list[tuple[str, torch.Tensor]]:
        return [(kind, self._buffers[name]) for kind, name in zip(self.kinds, self._names)]

    def dequantized(self, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """(out, in) W in ``dtype`` (fp32: exactly the file's values)."""
        return torch.cat([native.gguf_dequantize(blocks, kind, self.in_features, dtype) for kind, blocks in self.parts()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = as_rows(x, self.in_features, torch.bfloat16)  # (N, in)
        if x.shape[0] > native.GGUF_MAX_ROWS:
            y = F.linear(x, self.dequantized(), self.bias)
        else:  # the buffers straight from their dict: this runs some 130 times a decoding step
            buffers = self._buffers
            parts = [(code, buffers[name]) for code, name in zip(self.codes, self._names)]
            y = native.gguf_matmul_parts(x, parts, buffers["bias"], self.out_features)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{kind} x {rows}" for kind, rows in zip(self.kinds, self.rows))
        return f"in_features={self.in_features}, out_features={self.out_features} ({kinds}), bias={self.bias is not None}"


def _merge_kinds(parts: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """Neighbouring parts of one kind as one (fewer kernel calls: q|k of one kind, v of another -> 2)."""
    merged: list[tuple[str, torch.Tensor]] = []
    for kind, blocks in parts:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, torch.cat([merged[-1][1], blocks]))
        else:
            merged.append((kind, blocks))
    return merged


def as_rows(x: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """x (..., width) as dense (N, width) rows of ``dtype``, which the packed kernels need. Each
    conversion only where it is needed: at batch 1 a decoding step calls this some 150 times,
    and a cast or copy that changes nothing still costs a dispatch."""
    x = x.reshape(-1, width)
    if x.dtype != dtype:
        x = x.to(dtype)
    return x if x.is_contiguous() else x.contiguous()


def quantize_int4(w: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (out, in) uint8, scale (out, in / group), zero (out, in / group)) for w (out, in):
    per group, min -> code 0 and max -> code 15 (Int4Linear's W = (q - 8) * s + z)."""
    out_features, in_features = w.shape
    g = w.reshape(out_features, in_features // group, group)
    lo, hi = g.amin(-1), g.amax(-1)  # (out, in / group)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    codes = torch.round((g - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8)
    return codes.reshape(out_features, in_features), scale, lo + 8 * scale


def int4_fits(out_features: int, in_features: int, group: int = INT4_GROUP) -> bool:
    """Whether torch's int4 CPU kernel takes a layer of this shape (and the kernel exists)."""
    return (int4_supported() and group in (32, 64, 128, 256) and out_features % 16 == 0
            and in_features % group == 0)


def int4_supported() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def int8_supported() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def convert_weights(model: nn.Module, fmt: str, pack: bool = True) -> nn.Module:
    """The model with its weights in ``fmt`` (in place, for inference): "fp32", "bf16",
    "int8" (every nn.Linear, the LM head included, becomes an Int8Linear; the rest bf16), or
    "int4" (an Int4Linear where the kernel takes the shape, else an Int8Linear).
    With ``pack`` (on a CPU with oneDNN), fp32 and bf16 linear layers become ``PackedLinear``:
    the same numbers, faster matmuls, no gradients. ``pack=False`` keeps ordinary layers."""
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, got {fmt!r}")
    model = model.float() if fmt == "fp32" else model.to(torch.bfloat16)
    if fmt in ("int8", "int4"):
        if not int8_supported() or (fmt == "int4" and not int4_supported()):
            raise ValueError(f"{fmt} weights need torch's packed {fmt} CPU kernels (this torch is {torch.__version__})")
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"{fmt} weights run on the CPU kernels only; the model is on {device}")
        model.eval()
        _replace_linears(model, Int8Linear if fmt == "int8" else int4_or_int8)
    elif pack and packing_supported(next(model.parameters())):
        model.eval()
        _replace_linears(model, PackedLinear)
    return model


def int4_or_int8(linear: nn.Linear) -> nn.Module:
    """An Int4Linear where the int4 kernel takes the layer's shape, else an Int8Linear."""
    if int4_fits(linear.out_features, linear.in_features):
        return Int4Linear.from_linear(linear)
    return Int8Linear(linear)


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
        else:
            _replace_linears(child, make)
