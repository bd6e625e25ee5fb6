"""Key/value cache for incremental decoding, preallocated once per generation.

Layout: ``k`` and ``v`` are (L, B, H_kv, T_max, D): layers, batch, key/value heads (only
the ones that exist, so grouped-query models store fewer), cache slots, head size.
``length`` is how many slots are filled; every layer appends at the same place, and the
backbone calls ``advance`` once per forward pass after all layers have written.

Encoder-decoder models also keep each layer's cross-attention keys/values here: they
depend only on the encoder output, so they are projected once per generation, not per step.

``XLRecurrence`` is Transformer-XL's segment-level recurrence (Dai et al. 2019, section 3.2):
per layer, the hidden states that entered that layer's attention in earlier segments.
"""

from __future__ import annotations

import torch


class KVCache:
    keeps_hidden_states = False  # attention appends keys/values here (an XLRecurrence keeps hidden states)

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> K, V (B, H_kv, S, D)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (B, H_kv, T, D) after the filled slots; return all so far."""
        k_slots, v_slots, start = self.reserve(layer, k.shape[2])
        end = start + k.shape[2]
        k_slots[:, :, start:end] = k
        v_slots[:, :, start:end] = v
        return k_slots[:, :, :end], v_slots[:, :, :end]  # (B, H_kv, end, D)

    def reserve(self, layer: int, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Room for ``t`` new positions: ``layer``'s key and value slots, each (B, H_kv, max_len, D),
        and the first free slot, where a writer (``update``, or a native decoding step) puts them."""
        if self.length + t > self.max_len:
            raise ValueError(f"KV cache is full: {self.length + t} positions needed, {self.max_len} allocated")
        return self.k[layer], self.v[layer], self.length

    def cross_kv(self, layer: int, project) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention K, V of ``layer``: ``project()`` on first use, then the stored pair."""
        if layer not in self.cross:
            self.cross[layer] = project()
        return self.cross[layer]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (B,) in that order: beam search continues each hypothesis
        from its parent's cache. Cross K/V follow, so a row always meets its own source."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)
        self.cross = {i: (k.index_select(0, rows), v.index_select(0, rows)) for i, (k, v) in self.cross.items()}

    def advance(self, t: int) -> None:
        self.length += t

    def reset(self) -> None:
        """Empty the cache, keeping its memory (old slots are overwritten before being read)."""
        self.length = 0


class XLRecurrence:
    """Transformer-XL's recurrence (the paper's "memory"; named apart from an encoder's output,
    which cross-attention also calls memory): for each of L layers, the last ``mem_len`` hidden states
    (B, M, d_model) that entered that layer's self-attention, kept without gradient.

        segment τ:    layer l attends over [ SG(memory_l) ; h_l ]   (M + T keys)
        afterwards:   memory_l = last mem_len of [ memory_l ; h_l ], detached

    Storing hidden states rather than keys/values is the paper's choice: the keys of the
    memory are projected again with the current weights, so W_k and W_v still learn from
    them, while the stop-gradient keeps backpropagation inside the current segment.

    The model calls ``extend`` once per layer (through attention) and then ``advance``
    once per segment; ``length`` (M) is the same for every layer.
    """

    keeps_hidden_states = True

    def __init__(self, n_layer: int, mem_len: int):
        if mem_len < 0:
            raise ValueError(f"mem_len must be >= 0, got {mem_len}")
        self.n_layer, self.mem_len = n_layer, mem_len
        self.states: list[torch.Tensor | None] = [None] * n_layer  # layer -> (B, M, d), detached
        self.pending: list[torch.Tensor | None] = [None] * n_layer  # layer -> (B, T, d) of this segment

    @property
    def length(self) -> int:
        """M: positions held (0 before the first segment)."""
        first = self.states[0]
        return 0 if first is None else first.shape[1]

    def extend(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), this segment's input to ``layer``'s attention -> [memory; x] (B, M + T, d).
        x is remembered for ``advance``; the memory part carries no gradient."""
        self.pending[layer] = x
        past = self.states[layer]
        if past is None:
            return x
        if past.shape[0] != x.shape[0]:
            raise ValueError(f"memory holds {past.shape[0]} rows but the segment has {x.shape[0]}")
        return torch.cat([past.to(x.dtype), x], dim=1)

    def advance(self) -> None:
        """After a segment: each layer keeps the last ``mem_len`` of [memory; segment], detached."""
        if any(p is None for p in self.pending):
            raise RuntimeError("XLRecurrence.advance: not every layer passed its hidden states through extend")
        for layer, x in enumerate(self.pending):
            past = self.states[layer]
            joined = x.detach() if past is None else torch.cat([past, x.detach().to(past.dtype)], dim=1)
            self.states[layer] = joined[:, joined.shape[1] - min(self.mem_len, joined.shape[1]):]
        self.pending = [None] * self.n_layer

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (B,) in that order (beam search)."""
        self.states = [s if s is None else s.index_select(0, rows) for s in self.states]

    def reset(self) -> None:
        """Forget everything: the next segment starts without memory."""
        self.states = [None] * self.n_layer
        self.pending = [None] * self.n_layer
