"""``Linear``: ``nn.Linear`` whose matmuls run on oneDNN's kernels on a CPU.

For an fp32 matmul on a CPU, torch calls MKL's sgemm; for bf16 it already calls oneDNN
(``aten::mm`` picks ``mkldnn_matmul``). On this project's machine (2-core AMD EPYC, AVX-512)
oneDNN's fp32 kernels were measured 1.2-1.8x faster than MKL's at every size a Transformer
uses, one row (decoding) included: eight 768 x 3072 layers took 3.7 ms against 6.8 ms for one
row, 95 ms against 126 ms for 512 rows. oneDNN can also apply the activation in the matmul's
epilogue (``linear_act``: GELU, ReLU, SiLU), saving a pass over the (B, T, d_ff) hidden
layer: BERT-base's first FFN matmul plus GELU took 54 ms in bf16 and 109 ms in fp32 that
way, against 64 ms and 137 ms as ``F.gelu(F.linear(...))``.

The kernel is ``torch.ops.mkldnn._linear_pointwise`` (what ``torch.compile`` itself emits for
a linear layer on a CPU). It has no autograd formula, so ``_OneDNNLinear`` supplies the
backward, again on oneDNN's kernels. Everything else (CUDA, autocast, other dtypes, a torch
without oneDNN) takes ``F.linear`` unchanged: under CPU autocast the bf16 matmuls are
oneDNN's already.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
ONEDNN = _POINTWISE is not None and torch.backends.mkldnn.is_available()

ACTIVATIONS = {  # a config's activation name -> the function
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
    "silu": F.silu,
}
# the same names -> oneDNN's (attr, algorithm) for the fused epilogue
EPILOGUES = {"gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", ""), "silu": ("swish", "")}


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear`` takes oneDNN's kernel for this input and weight: both on the CPU, of
    one dtype (fp32 or bf16), with autocast off (it would want to cast them itself), and not
    inside ``torch.compile`` (which lowers ``F.linear`` to these kernels itself)."""
    return (ONEDNN and not torch.compiler.is_compiling() and x.device.type == "cpu"
            and weight.device.type == "cpu" and x.dtype == weight.dtype
            and x.dtype in (torch.float32, torch.bfloat16) and not torch.is_autocast_enabled("cpu"))


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, attr: str = "none",
               algorithm: str = "") -> torch.Tensor:
    return _POINTWISE(x, weight, bias, attr, [], algorithm)


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with both passes on oneDNN:  dx = g W,  dW = g^T x,  db = sum of g."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # x (..., in) | weight (out, in) | bias (out,) or None
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _pointwise(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # grad (..., out)
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _pointwise(g, weight.t()).view(x.shape)  # (N, out) @ (out, in)
        if ctx.needs_input_grad[1]:
            grad_w = _pointwise(g.t(), x.reshape(-1, x.shape[-1]).t())  # (out, N) @ (N, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN's kernels where ``onednn_applies``."""
    if not onednn_applies(x, weight):
        return F.linear(x, weight, bias)
    if _needs_grad(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return _pointwise(x, weight, bias)


def linear_act(x: torch.Tensor, layer: nn.Module, activation: str) -> torch.Tensor:
    """``ACTIVATIONS[activation](layer(x))``; without gradients on oneDNN, the activation fused
    into the matmul. Any other ``layer`` (a LoRA wrapper, an int8 layer) is called as it is."""
    if (type(layer) is Linear and onednn_applies(x, layer.weight)
            and not _needs_grad(x, layer.weight, layer.bias)):
        return _pointwise(x, layer.weight, layer.bias, *EPILOGUES[activation])
    return ACTIVATIONS[activation](layer(x))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
