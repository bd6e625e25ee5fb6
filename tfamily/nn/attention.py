"""Multi-head attention on ``F.scaled_dot_product_attention``: self or cross, any mask,
grouped key/value heads, and an optional preallocated KV cache.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .cache import KVCache
from .linear import Linear
from .masks import causal_mask
from .positions import turn_heads

Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, signed sin), each (B, T, 1, head_dim): positions.head_tables
Probe = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]  # (probs, v, allowed): see explicit_attention

EXPLICIT_MAX_TRAINING_KEYS = 512  # at 1024 keys SDPA's backward was 2x faster again
EXPLICIT_MAX_INFERENCE_KEYS = 128  # at 256 keys SDPA's forward was faster again
EXPLICIT_MAX_TRAINING_KEYS_AMX = 256  # at 512 keys SDPA was 12 % faster on the AMX machine


def _has_amx() -> bool:
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(is_amx and is_amx())


AMX = _has_amx()  # Intel's matrix tiles: oneDNN's small bf16 matmuls pay a set-up on every call


def use_explicit(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the textbook formula beats ``F.scaled_dot_product_attention`` here. Only for
    bf16 on a CPU, and the answer depends on the CPU. On a 2-core AMD EPYC (AVX-512 bf16, no
    AMX), torch 2.13's flash kernel was measured against ``explicit_attention`` (heads of 64,
    causal):

    - one query (decoding): SDPA took 3-5x as long, at 160 to 1024 cached keys;
    - training, forward + backward: SDPA took 3x as long at 16 x 4 heads x 128 tokens,
      1.25x at 8 x 12 x 256, 1.3x at 4 x 12 x 512; at 2 x 12 x 1024 it was 2x faster;
    - a forward pass over many queries without gradients (prefill, encoder inference):
      explicit was 1.7-2x faster up to 128 keys (BERT-base's 32 x 12 heads x 128: 10 ms
      against 17.5 ms per layer), SDPA 1.6x faster at 256 keys and 3-4x at 1024-2048.

    On a 2-core Intel Xeon with AMX the explicit formula's two small bf16 matmuls go to
    oneDNN's AMX kernels, which cost some 25-45 us a call however small the product, and
    SDPA wins every forward pass without gradients: one query 13 us against 94 (9 heads
    sharing 3 key/value heads, 40 keys) and 57 against 179 (12 heads, 1024 keys); a prefill
    44 us against 154 (9 heads x 64 tokens), BERT-base's 32 x 12 x 128 8.1 ms against 21.
    Training there still takes the explicit formula up to 256 keys: 3.9 ms against 13.6 at
    16 x 4 x 128, equal at 8 x 12 x 256, SDPA 12 % faster at 4 x 12 x 512.

    fp32 stays on SDPA everywhere (within 10 % of the explicit version, and no (T, S)
    score matrix in memory).
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return False
    if torch.is_grad_enabled() and q.requires_grad:
        return k.shape[2] <= (EXPLICIT_MAX_TRAINING_KEYS_AMX if AMX else EXPLICIT_MAX_TRAINING_KEYS)
    if AMX:
        return False
    return q.shape[2] == 1 or k.shape[2] <= EXPLICIT_MAX_INFERENCE_KEYS


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
           dropout_p: float, bias: torch.Tensor | None = None, scale: float | None = None,
           probe: Probe | None = None) -> torch.Tensor:
    """softmax(scale * q k^T + bias + mask) v.  q: (B, H, T, D); k, v: (B, H_kv, S, D); mask: bool,
    True = attend; bias: additive float (B | 1, H, T, S), e.g. T5's relative positions; scale
    defaults to 1 / sqrt(D). ``F.scaled_dot_product_attention``, or the explicit formula
    where that was measured faster (``use_explicit``). With a ``probe`` (an attention capture,
    ``tfamily.inspect.attention``) always the explicit formula, which hands the probe its
    probabilities; without one, nothing else changes.
    """
    if bias is not None:  # one additive float mask: the bias, and -inf where the bool mask forbids
        if is_causal:
            mask, is_causal = causal_mask(q.shape[2], k.shape[2], q.device), False
        bias = bias.to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    if probe is not None:  # a capture is on: the formula that materialises the probabilities
        return explicit_attention(q, k, v, mask, is_causal, dropout_p, scale, probe)
    if use_explicit(q, k):
        return explicit_attention(q, k, v, mask, is_causal, dropout_p, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p,
                                          enable_gqa=k.shape[1] != q.shape[1], scale=scale)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       is_causal: bool, dropout_p: float, scale: float | None = None,
                       probe: Probe | None = None) -> torch.Tensor:
    """The textbook formula, materialising the (B, H, T, S) scores. ``mask``
    is bool (True = attend) or an additive float mask. ``probe(probs, v, allowed)``, when
    given, sees the probabilities (B, H, T, S) before dropout, the values (B, H, S, D) they
    weigh, and which scores the mask left in (bool, broadcastable to the probabilities)."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: share each K/V head across its query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if scale != 1.0:  # on q, not on the scores: T x D numbers instead of T x S (T5 scales by 1: none)
        q = q * scale
    scores = q @ k.transpose(-1, -2)  # (B, H, T, S)
    if is_causal:
        mask = causal_mask(q.shape[2], k.shape[2], q.device)
    if mask is not None:  # in place on the fresh scores: no copy of the (B, H, T, S) matrix
        if mask.dtype == torch.bool:
            # untracked: where the mask forbids, softmax's output is 0 and so is the gradient its
            # backward hands on; recording the fill would only add a masked copy of that gradient
            with torch.no_grad():
                scores.masked_fill_(~mask, float("-inf"))
        else:
            scores = scores.add_(mask)
    probs = scores.softmax(-1)  # bf16 in, bf16 out; the kernel accumulates in fp32 (no fp32 copy of the scores)
    if probe is not None:
        probe(probs, v, ~torch.isneginf(scores))
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return probs @ v  # (B, H, T, D)


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(D) + mask) V over H heads, then an output projection.

    Self-attention projects Q, K and V with one fused matrix (one GEMM instead of three);
    cross-attention (``cross=True``) projects Q from x and K, V from ``memory``.

    ``probe`` is None except inside an attention capture (``tfamily.inspect.attention``),
    which sets it on the instance to record this module's probabilities.
    """

    probe: Probe | None = None

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, bias: bool = True,
                 dropout: float = 0.0, cross: bool = False, head_dim: int | None = None, scale: float | None = None,
                 qkv_bias: bool | None = None):
        """``bias`` puts biases on every projection; ``qkv_bias`` (None: as ``bias``) on q, k and v
        alone decides for those three (Qwen2 has them, its output projection has none)."""
        super().__init__()
        in_bias = bias if qkv_bias is None else qkv_bias
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = head_dim or d_model // n_head
        self.scale = scale  # None: 1 / sqrt(head_dim)
        q_dim, kv_dim = n_head * self.head_dim, n_kv_head * self.head_dim
        self.cross = cross
        if cross:
            self.q = Linear(d_model, q_dim, bias=in_bias)
            self.kv = Linear(d_model, 2 * kv_dim, bias=in_bias)
        else:
            self.qkv = Linear(d_model, q_dim + 2 * kv_dim, bias=in_bias)
        self.out = Linear(q_dim, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:  # (B, T, h*D) -> (B, h, T, D)
        b, n, _ = t.shape
        return t.view(b, n, heads, self.head_dim).transpose(1, 2)

    def project(self, x: torch.Tensor, memory: torch.Tensor | None = None, rotary: Rotary | None = None):
        """Q (B, H, T, D) from x; K, V (B, H_kv, S, D) from x (self) or memory (cross). ``rotary``
        turns q and k of self-attention together, in one pass over the projection's q and k heads."""
        if self.cross:
            return self._split(self.q(x), self.n_head), *self.project_memory(memory)
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.n_head + 2 * self.n_kv_head, self.head_dim)  # (B, T, H + 2 H_kv, D)
        qk, v = qkv.split([self.n_head + self.n_kv_head, self.n_kv_head], dim=2)
        if rotary is not None:
            qk = turn_heads(qk, *rotary)
        q, k = qk.split([self.n_head, self.n_kv_head], dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention K, V (B, H_kv, S, D) from the encoder output (B, S, d_model)."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._split(k, self.n_kv_head), self._split(v, self.n_kv_head)

    def _native_step(self, x: torch.Tensor, mask: torch.Tensor | None, cache, bias, rotary: Rotary | None) -> bool:
        """Whether this is a decoding step that ``native.attend_step`` takes whole: one new token a
        row of bf16 self-attention on a CPU, without gradients, into a KVCache, no score bias, no
        probe; a mask, if any, only of keys (B | 1, 1, 1, S), as padding makes it (a single query
        sees every cached key, so ``is_causal`` changes nothing); rotary tables, if any, of the
        usual shape. In a decoding step of Qwen2.5-0.5B the eager path between the two
        projections (some thirty operations) took 135-155 us a layer, the native call 39
        (benchmarks/RESULTS.md)."""
        if (x.shape[1] != 1 or bias is not None or self.cross or self.probe is not None or self.training
                or not isinstance(cache, KVCache) or x.dtype != torch.bfloat16 or x.device.type != "cpu"
                or torch.is_grad_enabled() or self.head_dim > native.ATTEND_MAX_HEAD_DIM):
            return False
        k, v = cache.k, cache.v  # (L, B, H_kv, slots, D)
        if (k.dtype != torch.bfloat16 or k.stride() != v.stride() or k.stride(-1) != 1 or k.stride(-2) != self.head_dim
                or k.shape[1] != x.shape[0]):
            return False
        keys = (1, 1, cache.length + 1)  # a key mask's trailing shape: this query against every key
        if mask is not None and not (mask.dtype == torch.bool and mask.dim() == 4 and mask.stride(-1) == 1
                                     and mask.shape[1:] == keys and mask.shape[0] in (1, x.shape[0])):
            return False
        if rotary is not None and not all(t.shape == (x.shape[0], 1, 1, self.head_dim) and t.dtype == torch.bfloat16
                                          and t.is_contiguous() for t in rotary):
            return False
        return native.attend_step_available()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, layer: int = 0,
                memory: torch.Tensor | None = None, rotary: Rotary | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model); mask: bool, broadcastable to (B, H, T, S), True = may attend;
        bias: additive (B | 1, H, T, S) scores for these queries against all keys (T5), or a
        callable ``bias(q, layer) -> (q, scores)`` for position scores that depend on the
        queries themselves (Transformer-XL: ``nn.xl.XLRelativePositions``).

        ``cache`` is a KVCache (keys and values appended), or a Transformer-XL memory whose
        ``keeps_hidden_states`` is True: then K and V are projected from the memory's hidden
        states followed by x, with the same weights as x's own (Dai et al. 2019, eq. in 3.2).

        ``rotary`` (``positions.head_tables`` for these T positions) turns q and k before k enters
        the cache, so cached keys keep the rotation of their own position and are never turned again.
        """
        if self._native_step(x, mask, cache, bias, rotary):  # one new token a row: one call from q|k|v to y
            k_slots, v_slots, start = cache.reserve(layer, 1)
            qkv = self.qkv(x).view(x.shape[0], 1, self.n_head + 2 * self.n_kv_head, self.head_dim).contiguous()
            return self.out(native.attend_step(qkv, rotary, k_slots, v_slots, start, self.n_kv_head, mask, self.scale))
        if self.cross and cache is not None:  # decoding: the memory's K, V are projected once
            q = self._split(self.q(x), self.n_head)
            k, v = cache.cross_kv(layer, lambda: self.project_memory(memory))
            cache = None  # nothing of x is appended: cross-attention keys are the source's
        elif cache is not None and cache.keeps_hidden_states:  # Transformer-XL memory: K, V from [memory; x]
            q, k, v = self.project(cache.extend(layer, x))  # (B, H, M+T, D): the memory's q rows are dropped
            q = q[:, :, -x.shape[1]:]  # (B, H, T, D)
            cache = None  # the memory keeps x itself (above), not its keys and values
        else:
            q, k, v = self.project(x, memory, rotary)  # (B, H, T, D), 2 x (B, H_kv, T, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H_kv, S, D) with S = cached + T
        if callable(bias):  # scores that depend on the queries (Transformer-XL's relative positions)
            q, bias = bias(q, layer)  # content queries (B, H, T, D), additive scores (B, H, T, S)
        y = attend(q, k, v, mask, is_causal and mask is None, self.dropout if self.training else 0.0,
                   bias, self.scale, self.probe)  # (B, H, T, D)
        y = self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))  # (B, T, H*D) -> (B, T, d_model)
        return self.resid_dropout(y) if self.training else y  # (eval: not even a no-op call per layer)
