"""Key/value cache for incremental decoding, preallocated once per generation.

Layout: ``k`` and ``v`` are (L, B, H_kv, T_max, D): layers, batch, key/value heads (only
the ones that exist, so grouped-query models store fewer), cache slots, head size.
``length`` is how many slots are filled; every layer appends at the same place, and the
backbone calls ``advance`` once per forward pass after all layers have written.

Encoder-decoder models also keep each layer's cross-attention keys/values here: they
depend only on the encoder output, so they are projected once per generation, not per step.
"""

from __future__ import annotations

import torch


class KVCache:
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
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H_kv, end, D)

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
