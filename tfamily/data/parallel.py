"""Parallel text (translation pairs) -> token pairs on disk -> batches by token count.

    pairs = read_parallel("train.en.gz", "train.de.gz")           # or read_parallel(tsv="pairs.tsv")
    data = TokenPairs.encode(tokenizer, pairs, max_len=128)        # ids, no specials added
    data.save("runs/x/data/train.pairs.safetensors")
    batches = TokenBatches(data, max_tokens=4096, seed=0)
    batch = batches.batch(step)                                    # [(src ids, tgt ids), ...]

Batches hold about ``max_tokens`` tokens each (sentences x the longest side, as fairseq
counts them) and group sentences of similar length, so little of a batch is padding.
Like ``WindowSampler``, ``batch(step)`` is a pure function of (seed, step): resuming needs
no sampler state.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

Pair = tuple[np.ndarray, np.ndarray]  # (source ids, target ids), int64 1-D


# ---------------------------------------------------------------------- reading text
def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` is decompressed), without their line breaks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None


def read_parallel(src: str | Path | None = None, tgt: str | Path | None = None,
                  tsv: str | Path | None = None) -> list[tuple[str, str]]:
    """Aligned (source, target) sentences: two files with one sentence a line (line N of one
    translates line N of the other), or one TSV of ``source<TAB>target`` lines."""
    if tsv is not None:
        if src is not None or tgt is not None:
            raise ValueError("give either a TSV file or a source and a target file, not both")
        pairs = []
        for i, line in enumerate(read_lines(tsv), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{tsv}, line {i}: expected 'source<TAB>target', found {len(parts)} field(s)")
            pairs.append((parts[0], parts[1]))
        return pairs
    if src is None or tgt is None:
        raise ValueError("parallel data needs both a source and a target file (or one TSV)")
    s, t = read_lines(src), read_lines(tgt)
    if len(s) != len(t):
        raise ValueError(f"{src} has {len(s)} lines but {tgt} has {len(t)}; the files must be aligned line by line")
    return list(zip(s, t))


# ---------------------------------------------------------------------- token pairs
@dataclass
class TokenPairs:
    """Tokenised pairs stored flat: all source ids in one array with offsets, same for targets."""

    src: np.ndarray  # (N_src_tokens,) int32
    src_offsets: np.ndarray  # (n + 1,) int64
    tgt: np.ndarray
    tgt_offsets: np.ndarray

    @classmethod
    def encode(cls, tokenizer, pairs: Sequence[tuple[str, str]], max_len: int | None = None) -> "TokenPairs":
        """Tokenise every pair; sides longer than ``max_len`` tokens are cut to it."""
        src_ids = tokenizer.encode_batch([s for s, _ in pairs])
        tgt_ids = tokenizer.encode_batch([t for _, t in pairs])
        if max_len is not None:
            src_ids = [ids[:max_len] for ids in src_ids]
            tgt_ids = [ids[:max_len] for ids in tgt_ids]
        return cls(*_flatten(src_ids), *_flatten(tgt_ids))

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def __getitem__(self, i: int) -> Pair:
        s = self.src[self.src_offsets[i]:self.src_offsets[i + 1]].astype(np.int64)
        t = self.tgt[self.tgt_offsets[i]:self.tgt_offsets[i + 1]].astype(np.int64)
        return s, t

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return np.diff(self.src_offsets), np.diff(self.tgt_offsets)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"src": self.src, "src_offsets": self.src_offsets, "tgt": self.tgt,
                   "tgt_offsets": self.tgt_offsets}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TokenPairs":
        t = load_file(str(path))
        return cls(t["src"], t["src_offsets"], t["tgt"], t["tgt_offsets"])


def _flatten(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


# ---------------------------------------------------------------------- batching
class TokenBatches:
    """Batches of about ``max_tokens`` tokens, sentences of similar length together.

    Each epoch sorts the pairs by length (ties broken at random), cuts the sorted list
    into batches where ``sentences x (longest side + extra)`` stays within ``max_tokens``,
    and visits the batches in a random order. ``extra`` counts the specials the objective
    adds (e.g. BOS / EOS). With ``shuffle=False`` (validation) the batches come in
    length order and ``len()`` says how many there are.

    Under data parallelism every rank builds the same global batch and keeps rows
    ``rank::world_size``.
    """

    def __init__(self, pairs: TokenPairs, max_tokens: int, seed: int = 0, shuffle: bool = True, extra: int = 1,
                 rank: int = 0, world_size: int = 1):
        if len(pairs) == 0:
            raise ValueError("no sentence pairs to batch")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.pairs, self.max_tokens, self.seed, self.shuffle = pairs, max_tokens, seed, shuffle
        self.extra, self.rank, self.world_size = extra, rank, world_size
        src_len, tgt_len = pairs.lengths()
        self.size = np.maximum(src_len, tgt_len) + extra  # (n,) padded width each pair needs
        longest = int(self.size.max())
        if longest > max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is smaller than the longest pair ({longest} tokens)")
        self._epoch, self._plan = -1, []
        self.n_batches = len(self._batches_for(0))

    def __len__(self) -> int:
        return self.n_batches

    def _batches_for(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches as arrays of pair indices (cached for the current epoch)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            tiebreak = rng.random(len(self.size)) if self.shuffle else np.arange(len(self.size))
            order = np.lexsort((tiebreak, self.size))  # by size, then the tie-break
            batches = _cut(order, self.size, self.max_tokens)
            if self.shuffle:
                batches = [batches[i] for i in rng.permutation(len(batches))]
            self._epoch, self._plan = epoch, batches
        return self._plan

    def indices(self, step: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if not self.shuffle:
            return self._batches_for(0)[step % self.n_batches]
        epoch, i = divmod(step, self.n_batches)
        return self._batches_for(epoch)[i][self.rank::self.world_size]

    def batch(self, step: int) -> list[Pair]:
        return [self.pairs[int(i)] for i in self.indices(step)]


def _cut(order: np.ndarray, size: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Split ``order`` (sorted by size) greedily into runs with len x max size <= max_tokens."""
    batches, start, widest = [], 0, 0
    for j, idx in enumerate(order):
        widest_next = max(widest, int(size[idx]))
        if (j - start + 1) * widest_next > max_tokens:
            batches.append(order[start:j])
            start, widest_next = j, int(size[idx])
        widest = widest_next
    batches.append(order[start:])
    return batches


def pad_batch(seqs: Sequence[np.ndarray | list[int]], pad: int, prefix: int | None = None,
              suffix: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences (optionally with a token before / after each) -> ids (B, T), mask (B, T).

    Filled in numpy and handed to torch once: per-row tensor writes cost more than the
    model's own small layers for a batch of a few hundred short sentences."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64) + (prefix is not None) + (suffix is not None)
    width = max(1, int(lengths.max()) if len(seqs) else 1)
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    start = 1 if prefix is not None else 0
    if prefix is not None:
        ids[:, 0] = prefix
    for i, s in enumerate(seqs):
        ids[i, start:start + len(s)] = s
    if suffix is not None:
        ids[np.arange(len(seqs)), lengths - 1] = suffix
    mask = np.arange(width)[None, :] < lengths[:, None]
    return torch.from_numpy(ids), torch.from_numpy(mask)
