"""Key/value cache for incremental decoding, preallocated once per generation.

Layout: ``k`` and ``v`` are (L, B, H_kv, T_max, D): layers, batch, key/value heads (only
the ones that exist, so grouped-query models store fewer), cache slots, head size.
``length`` is how many slots are filled; every layer appends at the same place, and the
backbone calls ``advance`` once per forward pass after all layers have written.
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

    def advance(self, t: int) -> None:
        self.length += t

    def reset(self) -> None:
        """Empty the cache, keeping its memory (old slots are overwritten before being read)."""
        self.length = 0
