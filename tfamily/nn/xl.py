"""Transformer-XL's relative positional attention (Dai et al. 2019, section 3.3), as a
position module that the shared ``Attention`` calls through its ``bias`` hook.

For query i and key j (keys = M memory positions, then the T of the segment), the paper
replaces the absolute-position score by

    A_ij =  q_i . k_j            (a) content
          + q_i . W_R R_{i-j}    (b) content-dependent position
          + u   . k_j            (c) global content bias
          + v   . W_R R_{i-j}    (d) global position bias

where R_d is the sinusoid of the relative distance d (no learned positions at all), W_R
projects it per layer, and u, v are learned per layer and head. (a) + (c) = (q + u) . k is
ordinary attention with shifted queries; (b) + (d) = (q + v) . W_R R_{i-j} is what this
module adds to the scores. Both are multiplied by the attention scale.

Computing (b) + (d) naively needs a (T, S, D) gather of R by i - j. The paper's
appendix B instead scores every query against the S distances S-1, ..., 1, 0 in one matmul,
(T, S), and then shifts row i left by T - 1 - i (``rel_shift``): a pad and two reshapes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def relative_sinusoid(length: int, dim: int, device=None) -> torch.Tensor:
    """R for the distances length-1, ..., 1, 0, in that (descending) order: (length, dim).

    The first half of the features are sines, the second cosines (the layout of Dai et al.'s
    code), at frequencies 10000^(-2i/dim). fp32 always: R is recomputed each forward pass, so
    a model cast to bf16 does not see rounded angles at long distances.
    """
    if dim % 2:
        raise ValueError(f"the relative sinusoid needs an even width, got {dim}")
    distance = torch.arange(length - 1, -1, -1, device=device, dtype=torch.float32)  # (S,)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = distance[:, None] * inv_freq[None, :]  # (S, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (S, dim)


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """(B, H, T, S) scores of query i against distances S-1, ..., 0 (column c = distance S-1-c)
    -> (B, H, T, S) scores of query i against key j, i.e. distance i + (S - T) - j.

    Padding one zero column on the left and reading the (T, S+1) rows as (S+1, T) moves every
    row one place further left than the row above; dropping the first T values leaves row i
    shifted left by T - 1 - i. Entries for keys after the query (j > i + S - T) come out as
    leftovers of other rows: the causal mask must hide them.
    """
    b, h, t, s = scores.shape
    padded = F.pad(scores, (1, 0))  # (B, H, T, S+1)
    return padded.view(b, h, s + 1, t)[:, :, 1:].reshape(b, h, t, s)


class XLRelativePositions(nn.Module):
    """The position part of Transformer-XL attention for a whole stack: W_R (one projection
    per layer), u and v (one vector per layer and head; "untied" across layers as in the
    paper's WikiText-103 runs).

    Per forward pass the backbone calls ``scorer(S)`` once and hands the result to the Stack
    as its ``bias``; each layer's attention then calls it with its queries:

        q (B, H, T, D), layer -> (q + u) for the content scores, scale * (b + d) (B, H, T, S)
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, head_dim: int, scale: float | None = None,
                 init_std: float = 0.02):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"xl_relative positions need an even d_model for the sinusoid, got {d_model}")
        self.d_model, self.n_head, self.head_dim = d_model, n_head, head_dim
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.r_proj = nn.ModuleList(nn.Linear(d_model, n_head * head_dim, bias=False) for _ in range(n_layer))  # W_R
        self.u = nn.Parameter(torch.empty(n_layer, n_head, head_dim))  # content bias, per layer and head
        self.v = nn.Parameter(torch.empty(n_layer, n_head, head_dim))  # position bias
        nn.init.normal_(self.u, 0.0, init_std)
        nn.init.normal_(self.v, 0.0, init_std)

    def position_keys(self, layer: int, length: int, device=None) -> torch.Tensor:
        """W_R R for distances length-1 .. 0, split into heads: (H, S, D)."""
        r = relative_sinusoid(length, self.d_model, device).to(self.r_proj[layer].weight.dtype)  # (S, d)
        return self.r_proj[layer](r).view(length, self.n_head, self.head_dim).transpose(0, 1)  # (H, S, D)

    def scores(self, q: torch.Tensor, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, T, D) against ``length`` keys -> (q + u (B, H, T, D), scale * ((b) + (d)) (B, H, T, S))."""
        u, v = self.u[layer][:, None].to(q.dtype), self.v[layer][:, None].to(q.dtype)  # (H, 1, D)
        r = self.position_keys(layer, length, q.device).to(q.dtype)  # (H, S, D)
        position = (q + v) @ r.transpose(-1, -2)  # (B, H, T, S): column c = distance S-1-c
        return q + u, rel_shift(position) * self.scale

    def scorer(self, length: int) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
        """The ``bias`` callable for attention over ``length`` keys (memory + segment)."""
        return lambda q, layer: self.scores(q, layer, length)

    def extra_repr(self) -> str:
        return f"layers={len(self.r_proj)}, heads={self.n_head}, head_dim={self.head_dim}"
