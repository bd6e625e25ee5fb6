"""Position modules. All take position ids (B, T), not a slice offset, so that left-padded
batches and cached decoding (ids continue from the cache length) use the same code path.

Additive (learned, sinusoidal): ids (B, T) -> embeddings (B, T, d), added to the tokens.
Rotary (RoPE, Su et al. 2021): ids (B, T) -> (cos, sin) tables (B, T, head_dim) that
attention uses to turn q and k; nothing is added to the residual stream.
GLM 2-D: ids (B, 2, T) -> (B, T, d); its layout (Part A, then each span) is built only by
``glm_part_a``, ``glm_in_span`` and ``glm_row_positions`` below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """A trained table of max_len vectors (GPT, BERT, BART). ``offset`` rows come first and are
    never used (BART's table starts at row 2, a left-over of fairseq's padding convention)."""

    def __init__(self, max_len: int, dim: int, offset: int = 0):
        super().__init__()
        self.max_len, self.offset = max_len, offset
        self.weight = nn.Parameter(torch.zeros(max_len + offset, dim))

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d)
        return nn.functional.embedding(pos + self.offset if self.offset else pos, self.weight)


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)  (Vaswani et al., 2017, §3.5)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoids (the original Transformer); a non-persistent buffer, no parameters."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoid_table(max_len, dim), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d)
        return nn.functional.embedding(pos, self.table)


def rotary_inv_freq(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """theta^(-2i / head_dim) for i = 0 .. head_dim/2 - 1, in fp32: (head_dim/2,).

    Computed as Hugging Face Llama does (fp32 power of an fp32 ramp), so imported weights
    see bit-identical angles.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (theta ** exponents)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): position ids (B, T) -> (cos, sin), each (B, T, head_dim).

    Pair i of a head's features is turned by the angle p * theta^(-2i/D) at position p, so
    q_m . k_n depends on m - n only. The pairs are (x[i], x[i + D/2]), the "rotate half"
    layout of GPT-NeoX and Hugging Face Llama, so their q/k weights load without permuting.

    No parameters and no buffers: a buffer would be cast along with the model by
    ``model.to(torch.bfloat16)``, and bf16 frequencies are off by whole radians at positions in
    the thousands. The fp32 frequencies are kept in a plain attribute instead, per device
    (``_frequencies``): a decoding step calls this once for a single position, and making them
    again each time was five of its operations. The tables are fp32; ``apply_rotary`` casts them
    to q's dtype.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_len: int = 2048):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {head_dim}")
        self.head_dim, self.theta, self.max_len = head_dim, float(theta), max_len
        self._per_device: dict[torch.device, torch.Tensor] = {}

    def _frequencies(self, device: torch.device) -> torch.Tensor:
        """(D,) fp32: ``rotary_inv_freq`` twice over, since pair i sits at features i and i + D/2."""
        if device not in self._per_device:
            inv_freq = rotary_inv_freq(self.head_dim, self.theta, device)  # (D/2,)
            self._per_device[device] = torch.cat([inv_freq, inv_freq])
        return self._per_device[device]

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, T) -> 2 x (B, T, D)
        angles = pos[..., None].float() * self._frequencies(pos.device)  # (B, T, D)
        return angles.cos(), angles.sin()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, max_len={self.max_len}"


def head_tables(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``RotaryEmbedding``'s (cos, sin), each (B, T, D) fp32, made ready for ``turn_heads``, once
    per forward pass rather than once per layer: (B, T, 1, D) in the activations' dtype, so
    they broadcast over the heads of a (B, T, h, D) projection, and sin with its first half
    negated: the minus sign of the quarter turn (a, b) -> (-b, a), moved into the table."""
    half = sin.shape[-1] // 2
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos[:, :, None].to(dtype), signed_sin[:, :, None].to(dtype)


def turn_heads(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Turn every feature pair of x (B, T, h, D), any number of heads h, by its angle; the tables
    come from ``head_tables``. Pair (a, b) = (x[i], x[i + D/2]) becomes (a cos - b sin, a sin + b cos):

        x * cos + (x2, x1) * (-sin_1, sin_2)

    where (x2, x1) swaps the halves (one flip of a (2, D/2) view)."""
    if cos.dtype != x.dtype:  # under autocast the projections come out bf16, the residual stream fp32
        cos, signed_sin = cos.to(x.dtype), signed_sin.to(x.dtype)
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # (B, T, h, D): (x2, x1)
    return x * cos + swapped * signed_sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn every feature pair of x (B, H, T, D) by its angle; cos, sin: (B, T, D), shared by the heads
    (``turn_heads`` on the transposed layout; attention itself calls that on its projections)."""
    return turn_heads(x.transpose(1, 2), *head_tables(cos, sin, x.dtype)).transpose(1, 2)


def relative_bucket(distance: torch.Tensor, bidirectional: bool, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each key-minus-query distance (Raffel et al. 2020, section 2.1).

    Half the buckets (all of them when not bidirectional, where only the past counts) hold
    exact distances 0, 1, ... up to half their number; the rest cover larger distances on a
    log scale up to ``max_distance``, beyond which everything shares the last bucket. When
    bidirectional, keys after the query get the upper half of the buckets.
    """
    if bidirectional:
        buckets //= 2
        base = (distance > 0).long() * buckets  # future keys use the upper half
        distance = distance.abs()
    else:
        base = torch.zeros_like(distance)
        distance = (-distance).clamp(min=0)  # a causal decoder only looks back
    exact = buckets // 2
    log_scaled = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                          * (buckets - exact)).long()
    return base + torch.where(distance < exact, distance, log_scaled.clamp(max=buckets - 1))


class RelativePositionBias(nn.Module):
    """A learned scalar per (distance bucket, head), added to the attention scores: T5's
    positions. Computed once per forward pass and shared by every layer of the stack."""

    def __init__(self, n_heads: int, buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(buckets, n_heads)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q_pos (T,), k_pos (S,) -> bias (1, H, T, S)."""
        distance = k_pos[None, :] - q_pos[:, None]  # (T, S)
        bucket = relative_bucket(distance, self.bidirectional, self.buckets, self.max_distance)
        return self.embedding(bucket).permute(2, 0, 1)[None]  # (1, H, T, S)


class GLMPositions(nn.Module):
    """GLM's 2-D positions (Du et al. 2022, section 2.2.2): two learned tables, added.

    Row 0 of ``pos`` (B, 2, T) is the position in Part A: a Part A token's own index, and for
    a Part B token the index of the [MASK] its span fills. Row 1 is the position inside the
    span: 0 in Part A, then 1, 2, ... for [S], x1, x2, ... of a span. So the model never sees
    a span's length before generating it, and every span knows which blank it belongs to.

        Part A   x1 x2 [M] x4 [M]      Part B   [S] x5 x6 [S] x3
        row 0     0  1  2   3  4                 4   4  4   2  2
        row 1     0  0  0   0  0                 1   2  3   1  2
    """

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.block = LearnedPositions(max_len, dim)  # position in Part A
        self.span = LearnedPositions(max_len, dim)  # position inside the span (0 = Part A)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, 2, T) -> (B, T, d)
        if pos.dim() != 3 or pos.shape[1] != 2:
            raise ValueError(f"glm_2d positions must be (batch, 2, tokens), got {tuple(pos.shape)}")
        return self.block(pos[:, 0]) + self.span(pos[:, 1])


# GLM's 2-D layout. Every place that feeds a GLM (the objective's training rows, the model's
# plain Part A call, the decoding state's prefill and steps) builds its positions with these
# three functions, so the rule pictured in GLMPositions is written once.

def glm_part_a(block: torch.Tensor) -> torch.Tensor:
    """Positions of Part A tokens: (B, T) position in Part A -> (B, 2, T), 0 inside-span."""
    return torch.stack([block, torch.zeros_like(block)], dim=1)


def glm_in_span(blank_at: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Positions of Part B tokens: (B, T) Part A index of the blank each token fills and (B, T)
    its offset in that span (0 for [S], k for the span's k-th token) -> (B, 2, T). Inside-span
    positions start at 1, so they never meet Part A's 0."""
    return torch.stack([blank_at, offset + 1], dim=1)


def glm_row_positions(part_a_len: int, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(2, T) positions of one whole training row: Part A's ``part_a_len`` tokens, then the
    spans of Part B in the order they are written, each given as (Part A index of its blank,
    its tokens with [S])."""
    blank_at = [at for at, n in spans for _ in range(n)]
    offset = [k for _, n in spans for k in range(n)]
    part_a = glm_part_a(torch.arange(part_a_len)[None])  # (1, 2, A)
    part_b = glm_in_span(torch.tensor([blank_at], dtype=torch.long), torch.tensor([offset], dtype=torch.long))
    return torch.cat([part_a, part_b], dim=2)[0]  # (2, A + B)


def glm_row_limit(n: int, mask_ratio: float = 0.15) -> int:
    """The most tokens a GLM row of n text tokens can become under blank infilling: each span
    adds its [MASK] to Part A and its [S] to Part B, and there are at most ceil(mask_ratio * n)
    spans (one for gMASK). A GLM's max_seq_len must cover it."""
    return n + 2 * max(1, min(math.ceil(mask_ratio * n), n - 1))


def make_relative_bias(cfg, bidirectional: bool) -> RelativePositionBias | None:
    if cfg.position != "t5_relative":
        return None
    return RelativePositionBias(cfg.n_head, cfg.relative_buckets, cfg.relative_max_distance, bidirectional)


def make_positions(kind: str, max_len: int, dim: int, offset: int = 0) -> nn.Module | None:
    """The additive position module, or None when positions are not added to the tokens
    ("none"; "rotary" and "t5_relative", which attention applies instead)."""
    if kind == "learned":
        return LearnedPositions(max_len, dim, offset)
    if kind == "sinusoidal":
        return SinusoidalPositions(max_len, dim)
    if kind == "glm_2d":
        return GLMPositions(max_len, dim)
    if kind in ("none", "rotary", "t5_relative"):
        return None
    raise ValueError(f"unknown position kind {kind!r}")


def make_rotary(kind: str, head_dim: int, theta: float, max_len: int) -> RotaryEmbedding | None:
    """The rotary module when positions are rotary, else None (the additive kinds)."""
    return RotaryEmbedding(head_dim, theta, max_len) if kind == "rotary" else None


def positions_from_mask(mask: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Position ids that skip padding: (B, T) bool mask (True = real token) -> (B, T) long.

    A left-padded row [pad pad a b c] gets positions [0 0 0 1 2], so the real tokens see
    the same positions as without padding. ``offset`` (int or (B, 1)) continues a cache.
    """
    pos = mask.long().cumsum(-1) - 1
    return (pos.clamp(min=0) + offset)
