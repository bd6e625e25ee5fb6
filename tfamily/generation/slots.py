"""Row storage for a decoder's keys and values: the cache ``CausalState`` decodes into.

Rows may join and leave at any time, which is what continuous batching needs: the server's
engine owns one ``SlotCache`` for every request it runs, ``generate`` makes one for its batch.

    k, v   (L, slots, H_kv, capacity, D)
    mask   (slots, capacity) bool: True where a row has a real token
    start  row -> first column of its tokens; every row ends at the shared column ``end``

Rows are kept dense (rows [0, n) are in use) and right-aligned at ``end``: a row's tokens
occupy [start_row, end), older columns are masked out. A window [min start, end) is handed to
the model as an ordinary KV cache (``WindowCache``), so the model code needs no change. New
rows are prefilled straight into their slots. When ``end`` reaches the capacity, every row
moves left by the oldest row's start (once per many steps when the capacity exceeds the
longest row, as the engine's does).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn.cache import KVCache


class WindowCache(KVCache):
    """A KV cache that is a view on slot storage: some rows, the columns from ``begin`` on.

    The model writes its new keys/values at ``length`` exactly as into a KVCache of its own;
    the writes land in the shared storage."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, length: int):  # noqa: D107 (storage views)
        self.k, self.v = k, v  # (L, n, H_kv, capacity - begin, D)
        self.max_len = k.shape[3]
        self.length = length
        self.cross = {}


class SlotCache:
    """K/V storage for up to ``slots`` rows of ``capacity`` columns (see the module docstring)."""

    def __init__(self, model: nn.Module, slots: int, capacity: int):
        probe = model.make_cache(1, 1)  # shapes and dtype as the model wants them
        n_layer, _, n_kv, _, head_dim = probe.k.shape
        shape = (n_layer, slots, n_kv, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=probe.k.dtype, device=probe.k.device)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.zeros(slots, capacity, dtype=torch.bool, device=probe.k.device)
        self.start: list[int] = []
        self.end = 0
        self.slots, self.capacity = slots, capacity

    @property
    def n(self) -> int:
        return len(self.start)

    @property
    def span(self) -> int:
        """Columns of the window the next step sees before its own token: end - min start."""
        return self.end - min(self.start) if self.start else 0

    # ------------------------------------------------------------------ rows joining
    def prefill_window(self, m: int, width: int) -> WindowCache:
        """The cache that prefills ``m`` new rows (after the n in use) of ``width`` columns,
        right-aligned at ``end``; ``join`` them once the forward has written it."""
        if self.n + m > self.slots:
            raise ValueError(f"{self.n} + {m} rows do not fit in {self.slots} slots")
        if width > self.capacity:
            raise ValueError(f"a prompt of {width} tokens does not fit in {self.capacity} columns")
        if self.n == 0:
            self.end = width
        elif self.end < width:
            self._shift(width - self.end)
        elif self.end == self.capacity and self.span < self.capacity:
            self._shift(-min(self.start))  # room for the next step's column
        rows = slice(self.n, self.n + m)
        return WindowCache(self.k[:, rows, :, self.end - width:], self.v[:, rows, :, self.end - width:], 0)

    def join(self, mask: torch.Tensor, lengths: Sequence[int]) -> None:
        """Take in the rows ``prefill_window`` made: mask (m, width), each row's real length."""
        m, width = mask.shape
        rows = slice(self.n, self.n + m)
        self.mask[rows] = False
        self.mask[rows, self.end - width:self.end] = mask
        self.start.extend(self.end - n for n in lengths)  # padding columns stay outside the row

    # ------------------------------------------------------------------ one decode step
    def window(self) -> tuple[WindowCache, torch.Tensor]:
        """The cache the model sees for one decode step of every row, and its (n, S + 1)
        attention mask (the new token's column already marked), making room first if the
        storage is full."""
        if self.end == self.capacity:
            self._shift(-min(self.start))
        begin, n = min(self.start), self.n
        self.mask[:n, self.end] = True
        cache = WindowCache(self.k[:, :n, :, begin:], self.v[:, :n, :, begin:], self.end - begin)
        return cache, self.mask[:n, begin:self.end + 1]

    def advance(self) -> None:
        self.end += 1

    # ------------------------------------------------------------------ rows leaving
    def reorder(self, rows: Sequence[int]) -> None:
        """Continue with rows ``rows`` in that order (a row may repeat: beam search; rows left
        out are freed). Only rows that change place are copied, so dropping one row by moving
        the last into its place copies one row."""
        moved = [i for i, r in enumerate(rows) if r != i]
        if moved:
            dst = torch.tensor(moved, device=self.k.device)
            src = torch.tensor([rows[i] for i in moved], device=self.k.device)
            self.k[:, dst] = self.k[:, src]  # the right side is gathered first: overlaps are safe
            self.v[:, dst] = self.v[:, src]
            self.mask[dst] = self.mask[src]
        self.mask[len(rows):self.n] = False
        self.start = [self.start[r] for r in rows]
        if not self.start:
            self.end = 0

    def reset(self) -> None:
        """Free every row."""
        self.mask[:self.n] = False
        self.start, self.end = [], 0

    def _shift(self, d: int) -> None:
        """Move every row d columns right (d > 0) or left (d < 0)."""
        if d == 0:
            return
        n, end = self.n, self.end
        src = slice(max(0, -d), end)
        dst = slice(max(0, d), end + d)
        self.k[:, :n, :, dst] = self.k[:, :n, :, src].clone()
        self.v[:, :n, :, dst] = self.v[:, :n, :, src].clone()
        self.mask[:n, dst] = self.mask[:n, src].clone()
        if d > 0:
            self.mask[:n, :d] = False
        else:
            self.mask[:n, end + d:] = False
        self.start = [s + d for s in self.start]
        self.end = end + d
