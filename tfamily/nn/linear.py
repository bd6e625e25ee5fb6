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

import copy

import torch
import torch.nn.functional as F
from torch import nn

_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_REORDER = getattr(getattr(torch.ops, "mkldnn", None), "_reorder_linear_weight", None)
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
    """``ACTIVATIONS[activation](layer(x))``. tfamily's own layers (``Linear``, ``PackedLinear``)
    take the activation themselves and fuse it into the matmul where oneDNN runs it without
    gradients; any other ``layer`` (a LoRA wrapper, an int8 layer) is called as it is."""
    if isinstance(layer, (Linear, PackedLinear)):
        return layer(x, activation)
    return ACTIVATIONS[activation](layer(x))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by ``linear``."""

    def forward(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out); ``activation`` (a name in ACTIVATIONS) applied after, in the
        matmul's epilogue when oneDNN runs it and nothing needs a gradient."""
        if activation is None:
            return linear(x, self.weight, self.bias)
        if onednn_applies(x, self.weight) and not _needs_grad(x, self.weight, self.bias):
            return _pointwise(x, self.weight, self.bias, *EPILOGUES[activation])
        return ACTIVATIONS[activation](linear(x, self.weight, self.bias))


# ---- inference weights in oneDNN's own layout --------------------------------------------

PACKING_ROWS = 8  # the batch size oneDNN is told to expect when it picks the weight's layout


def packing_supported(weight: torch.Tensor) -> bool:
    """Whether ``PackedLinear`` can hold this weight: oneDNN's reorder exists, on a CPU, fp32 or bf16."""
    return (ONEDNN and _REORDER is not None and weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.bfloat16))


class PackedLinear(nn.Module):
    """An inference-only linear layer whose weight is stored in oneDNN's blocked layout.

    ``Linear`` hands oneDNN a plain (out, in) matrix, which the kernel rearranges into its
    own tiles on every call. Rearranged once here (``torch.ops.mkldnn._reorder_linear_weight``,
    what ``torch.compile``'s CPU freezing does), the same matmuls took on this project's
    machine (2-core AMD EPYC, AVX-512 bf16), one call each:

    - bf16, 1 to 8 rows (decoding): 0.09 -> 0.05 ms for 768 -> 2304, 0.18 -> 0.11 ms for
      3072 -> 768; GPT-2 small greedy decoding 1.2x as fast at batch 1, 1.4x at batch 8;
    - bf16, 4,096 rows (BERT-base's batch): 2-8 % faster (48.4 -> 44.3 ms for 768 -> 3072);
    - fp32, 8 rows: 0.39 -> 0.24 ms for 3072 -> 768 (decoding at batch 8: 1.2x); at 1 row and
      at 4,096 rows within a few per cent either way.

    The packed tensor is opaque: no gradients, no state dict, CPU only. ``nn.quant.convert_weights``
    swaps these in for a model that only generates or serves; a plain attribute, not a buffer,
    so ``state_dict()`` and ``.to()`` leave it alone.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        if not packing_supported(weight):
            raise ValueError(f"oneDNN weight packing needs an fp32 or bf16 weight on a CPU with oneDNN; "
                             f"got {weight.dtype} on {weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _REORDER(weight, PACKING_ROWS)  # (out, in), opaque
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out); ``activation`` (a name in EPILOGUES) applied in the epilogue."""
        if _needs_grad(x):
            raise RuntimeError("this layer's weight is packed for inference (nn.quant.convert_weights) and "
                               "has no gradient; train or fine-tune the model before converting it")
        if x.dtype != self.weight.dtype:
            raise TypeError(f"input is {x.dtype} but the packed weight is {self.weight.dtype}")
        attr, algorithm = EPILOGUES[activation] if activation else ("none", "")
        return _pointwise(x, self.weight, self.bias, attr, algorithm)

    def __deepcopy__(self, memo):  # the opaque tensor cannot be deep-copied; share it (it is never written)
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__dict__.update({k: (v if k == "weight" else copy.deepcopy(v, memo)) for k, v in self.__dict__.items()})
        return clone

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.weight.dtype}")
