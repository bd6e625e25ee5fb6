"""Cross-entropy through the LM head, chunk by chunk, without the full (N, V) logits.

A language model's last step is ``logits = h W^T + b`` over a vocabulary of tens of
thousands, followed by softmax cross-entropy. Done the plain way, a GPT-2 batch of 8 x 256
tokens makes (2048, 50257) logits: 206 MB in bf16, again 412 MB as the fp32 copy the loss
needs, plus the log-softmax, its gradient and the fresh buffers the backward fills. On a CPU
that traffic (and the page faults of every new large buffer) costs about as much as the
head's matmuls themselves.

``linear_cross_entropy`` takes the head's input and weights instead and walks the rows in
chunks. Each chunk's logits are made, turned into the loss and, when a gradient is wanted,
straight away into the gradient of the logits (softmax minus the target), which is pushed
back through the head's matmuls before the next chunk reuses the same buffers. The whole
backward pass of the head is done inside the forward call; ``backward`` only hands the
stored gradients on. Memory is one chunk of logits instead of all of them; the matmul
FLOPs are the same. Measured on GPT-2 small's head (2048 x 768 -> 50257, bf16 autocast,
forward + backward, 2-core CPU): 1.73 s against 2.37 s the plain way.

The matmuls run in the autocast dtype when autocast is on (as ``nn.Linear`` would), and the
softmax and the loss in fp32.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

CHUNK_BYTES = 128 * 2 ** 20  # fp32 logits per chunk: a few chunks per batch, each a large GEMM


class Workspace(threading.local):
    """Scratch buffers kept from one call to the next, per thread, on the CPU only.

    A fresh tensor of 100+ MB is new memory from the OS, and every page of it faults on
    first touch: filling a new 131 MB tensor took 40-47 ms on this project's machine against
    3.5 ms to refill one already used (and about 4x that inside a training step in a busy
    stretch). The loss's chunk buffers are that size and needed every step, so they are
    kept: at most one chunk of logits in each dtype (about CHUNK_BYTES fp32 + half that in
    bf16), and the head's weight and its gradient in the matmul dtype, until ``release``.
    """

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A (rows, cols) tensor of undefined content; on a GPU (whose allocator caches) a new one."""
        if device.type != "cpu":
            return torch.empty(rows, cols, dtype=dtype, device=device)
        key = (name, dtype)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < rows * cols:
            buf = self.buffers[key] = torch.empty(rows * cols, dtype=dtype)
        return buf[:rows * cols].view(rows, cols)

    def release(self) -> None:
        self.buffers.clear()


WORKSPACE = Workspace()


@dataclass
class DeferredHead:
    """An LM head not applied yet: the loss projects ``features`` through it chunk by chunk
    (``linear_cross_entropy``); ``logits()`` applies it the ordinary way."""
    features: torch.Tensor  # (B, T, d): what the head would be applied to
    weight: torch.Tensor  # (V, d)
    bias: torch.Tensor | None  # (V,) or None

    def logits(self) -> torch.Tensor:  # (B, T, V)
        return F.linear(self.features, self.weight, self.bias)


def chunk_rows(n: int, vocab: int) -> int:
    """Rows per chunk: about CHUNK_BYTES of fp32 logits, the rows shared evenly between chunks."""
    most = max(16, CHUNK_BYTES // (4 * vocab))
    chunks = max(1, -(-n // most))
    return max(1, -(-n // chunks))


def compute_dtype(features: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for this device (the head would run in it),
    else the weight's own dtype."""
    device = features.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Every row has a target (``linear_cross_entropy`` drops the ignored ones first), so the
    mean is over N rows and d loss / d logits = (softmax - (1 - e) onehot - e / V) / N."""

    @staticmethod
    def forward(ctx, features, weight, bias, targets, label_smoothing, dtype):
        # features (N, d) | weight (V, d) | bias (V,) or None | targets (N,)
        (n, d), vocab = features.shape, weight.shape[0]
        want_grad = any(ctx.needs_input_grad[:3])
        acc = torch.promote_types(dtype, torch.float32)  # softmax, loss and sums: fp32 (fp64 stays fp64)
        t_all = targets.unsqueeze(1)  # (N, 1)
        h_all = features.to(dtype)
        # the head's weight in the matmul dtype: a scratch copy (GPT-2's is 77 MB in bf16)
        w = weight if weight.dtype == dtype else WORKSPACE.get("weight", vocab, d, dtype, weight.device).copy_(weight)
        b = bias.to(dtype) if bias is not None else None
        rows = chunk_rows(n, vocab)
        # buffers reused by every chunk (and every call): fresh large tensors page-fault on every use
        z_head = WORKSPACE.get("logits", rows, vocab, dtype, features.device)  # logits in the matmul dtype
        z = WORKSPACE.get("logits", rows, vocab, acc, features.device) if dtype != acc else z_head
        if want_grad:
            grad_h = torch.empty(n, d, dtype=dtype, device=features.device)
            # the weight's gradient sums over chunks in the matmul dtype (bf16: like autocast's own
            # nn.Linear backward, whose single GEMM also rounds its result to bf16); a scratch
            # buffer when it is handed on as a copy in the weight's dtype
            if dtype == weight.dtype:
                grad_w = torch.zeros(vocab, d, dtype=dtype, device=weight.device)
            else:
                grad_w = WORKSPACE.get("grad_w", vocab, d, dtype, weight.device).zero_()
            grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if bias is not None else None
            onehot = torch.full((rows, 1), -(1 - label_smoothing) / max(n, 1), dtype=acc, device=features.device)
        total = torch.zeros((), dtype=acc, device=features.device)
        for start in range(0, n, rows):
            end = min(n, start + rows)
            h, t = h_all[start:end], t_all[start:end]
            zc_head, zc = z_head[:end - start], z[:end - start]  # (c, V)
            if b is None:
                torch.matmul(h, w.t(), out=zc_head)
            else:
                torch.addmm(b, h, w.t(), out=zc_head)
            if zc is not zc_head:
                zc.copy_(zc_head)  # the chunk's logits in the accumulation dtype
            torch.log_softmax(zc, dim=-1, out=zc)  # log p, in place: one fused pass
            total -= zc.gather(1, t).sum()
            if label_smoothing:  # (1 - e) * nll + e * mean over classes of -log p
                total += label_smoothing * (zc.gather(1, t).sum() - zc.mean(dim=-1).sum())
            if not want_grad:
                continue
            # d loss / d z = (p - (1 - e) onehot - e / V) / N, in place: exp(log p - log N) = p / N
            zc.sub_(math.log(n)).exp_()
            zc.scatter_add_(1, t, onehot[:end - start])
            if label_smoothing:
                zc.sub_(label_smoothing / (vocab * n))
            if grad_b is not None:
                grad_b += zc.sum(0)
            if zc is not zc_head:
                zc_head.copy_(zc)  # the gradient in the matmul dtype
            torch.matmul(zc_head, w, out=grad_h[start:end])  # (c, d)
            grad_w.addmm_(zc_head.t(), h)  # (V, d)
        if want_grad:
            ctx.save_for_backward(grad_h.to(features.dtype), grad_w.to(weight.dtype),
                                  grad_b.to(bias.dtype) if grad_b is not None else None)
        return total / max(n, 1)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        if grad_loss.item() == 1.0:  # the usual case (a plain loss.backward()): no copies to scale
            return grad_h, grad_w, grad_b, None, None, None
        scale = lambda g: None if g is None else g * grad_loss.to(g.dtype)  # noqa: E731
        return scale(grad_h), scale(grad_w), scale(grad_b), None, None, None


def linear_cross_entropy(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``F.linear(features, weight, bias)`` against ``targets`` over the
    targets that are not IGNORE_INDEX, without materialising the logits.

    features (..., d), targets (...) of the same leading shape; weight (V, d). Equal to
    ``F.cross_entropy(F.linear(features, weight, bias).float().flatten(0, -2), targets.flatten(),
    ignore_index=-100, label_smoothing=label_smoothing)``, gradients included.

    Rows whose target is ignored (padding, MLM's unmasked tokens, GLM's Part A) are dropped
    before the head, so they cost no matmul at all.
    """
    if features.shape[:-1] != targets.shape:
        raise ValueError(f"features {tuple(features.shape)} and targets {tuple(targets.shape)} "
                         "disagree on the leading dimensions")
    dtype = compute_dtype(features, weight)
    features, targets = features.reshape(-1, features.shape[-1]), targets.reshape(-1)  # (N, d), (N,)
    scored = targets != IGNORE_INDEX
    if not bool(scored.all()):
        rows = scored.nonzero().squeeze(1)
        features, targets = features.index_select(0, rows), targets[rows]
    with torch.autocast(features.device.type, enabled=False):
        return _LinearCrossEntropy.apply(features, weight, bias, targets, float(label_smoothing), dtype)


def head_or_deferred(head: torch.nn.Linear, features: torch.Tensor, defer: bool, weight: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor | None, DeferredHead | None]:
    """(logits (B, T, V), None), or with ``defer`` (None, the head left for the loss): what a
    language model's forward returns, so training never builds the full logits. ``weight``:
    the head's matrix as ``tied_table`` handed it out (default ``head.weight``)."""
    if defer:
        return None, DeferredHead(features, head.weight if weight is None else weight, head.bias)
    return head(features), None


class _ReadBeforeLookups(torch.autograd.Function):
    """The identity. Applied to a tied table before any lookup of it, its node is older than
    theirs, and autograd's engine runs younger nodes first: so the head's gradient reaches
    the table after the lookups' (see ``tied_table``)."""

    @staticmethod
    def forward(ctx, weight):
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        return grad


@contextlib.contextmanager
def tied_table(head: torch.nn.Module, table: torch.nn.Embedding, defer: bool) -> Iterator[torch.Tensor | None]:
    """Run a training forward of a tied LM (the lookups of ``table`` inside the ``with``);
    yields the head's weight for ``head_or_deferred``.

    Why: a table tied to the LM head gets a gradient from the head (dense, every row) and
    one from each lookup. Autograd's lookup gradient is a dense (V, d) tensor of zeros with
    the looked-up rows added, new memory each time: 154 MB of fp32 for GPT-2's table, whose
    first touch cost 150-220 ms of page faults per step on this project's 2-core machine.
    Here, training a deferred head on a CPU, the lookups hand back sparse rows instead, and
    autograd adds them in place into the head's dense gradient, which becomes the table's.
    It adds in place only when the sparse rows arrive first (a dense gradient that came
    first gets a fresh sum), so the head reads the table through an identity node made
    before the lookups (``_ReadBeforeLookups``), whose gradient autograd passes on last.
    The gradient is the same either way; the order decides only where it is summed.

    Only with ``defer`` (the loss will use the head, so the sum is always dense) and when
    the head's weight is the table's, gradients are on, on a CPU, and not compiling;
    otherwise this yields None (``head_or_deferred``: the head's own weight) and changes nothing.
    """
    weight = getattr(head, "weight", None)  # an int8 head has none
    if not (defer and weight is table.weight and weight.requires_grad and torch.is_grad_enabled()
            and weight.device.type == "cpu" and not table.sparse and not torch.compiler.is_compiling()):
        yield None
        return
    table.sparse = True  # nn.Embedding's own switch: F.embedding(..., sparse=True)
    try:
        yield _ReadBeforeLookups.apply(weight)
    finally:
        table.sparse = False
