"""Text -> token shards on disk -> random training windows, never all in RAM.

Layout of a prepared corpus folder::

    meta.json          dtype, vocab size, token count of every shard, source, split point
    tokenizer.json     the tokenizer that made the ids (so they can always be decoded)
    train_000.bin ...  raw little-endian uint16 (vocab <= 65535) or uint32 token ids
    val_000.bin ...

As in nanoGPT the text is one continuous token stream: the first (1 - val_fraction) of
the file is train, the rest is val. The split is chosen by bytes (the file size is known
before tokenizing, the token count is not) and moved forward to the next safe line
boundary, so train + val tokens are exactly the tokens of the whole text.

Reading goes through ``np.memmap``, so the OS pages in only the windows a batch touches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_text
from ..tokenizers.textio import (
    CHUNK_BYTES,
    find_safe_cut,
    iter_text_chunks,
    last_safe_cut,
)

META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "tfamily-token-shards"
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard: few files, cheap to memmap


@dataclass(frozen=True)
class CorpusInfo:
    """What `prepare_corpus` wrote."""

    out_dir: Path
    train_tokens: int
    val_tokens: int
    train_shards: int
    val_shards: int
    dtype: str
    vocab_size: int
    source_bytes: int
    val_start_byte: int  # first byte of the text that went to val


# ---------------------------------------------------------------------- writing
class _ShardWriter:
    """Appends token ids to ``{split}_000.bin``, ``_001`` ... of at most ``shard_tokens``."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.counts: list[int] = []  # tokens in each shard written so far
        self._file = None

    def write(self, ids: np.ndarray) -> None:
        while ids.size:
            if self._file is None or self.counts[-1] == self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.counts[-1]
            piece = ids[:room]
            self._file.write(piece.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
            self.counts[-1] += piece.size
            ids = ids[room:]

    def _next_shard(self) -> None:
        self.close()
        self._file = open(self.folder / shard_name(self.split, len(self.counts)), "wb")
        self.counts.append(0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}.bin"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the disk and page-cache footprint whenever the ids fit."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def _val_start(path: Path, size: int, val_fraction: float) -> int:
    """Byte offset where val begins: the first safe line boundary at or after the fraction
    point, else the last one before it (a short file), else the point itself."""
    if val_fraction == 0:
        return size
    offset = int(size * (1.0 - val_fraction))
    cut = find_safe_cut(path, offset)
    if cut is not None:
        return cut
    lo = max(offset - CHUNK_BYTES, 0)
    with open(path, "rb") as f:
        f.seek(lo)
        near = f.read(offset - lo + 4)  # (+4: the whole character at the offset)
    cut = last_safe_cut(near, limit=offset - lo)
    if cut is None:
        # One long line: split it at the next character boundary; only the token at
        # that seam can differ from the whole text's ids.
        cut = offset - lo
        while cut < len(near) and near[cut] & 0xC0 == 0x80:  # skip UTF-8 continuation bytes
            cut += 1
    return lo + cut


def _encode_range(path: Path, start: int, end: int, tokenizer, writer: _ShardWriter, chunk_bytes: int) -> None:
    for _, text in iter_text_chunks(path, start, end, chunk_bytes):
        writer.write(np.asarray(tokenizer.encode(text), dtype=np.int64))  # (n,)


def prepare_corpus(
    text_path: str | os.PathLike,
    tokenizer,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    chunk_bytes: int = CHUNK_BYTES,
) -> CorpusInfo:
    """Tokenize a UTF-8 text file into train/val shards under ``out_dir``.

    Streams the file ``chunk_bytes`` at a time, so memory does not grow with the corpus.
    Everything is written into a temporary folder first and moved into place at the
    end, so a failure (say, a bad byte half-way) leaves an earlier preparation intact.
    """
    path = Path(text_path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} not found")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"corpus file {path} is empty")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not isinstance(shard_tokens, int) or shard_tokens <= 0:
        raise ValueError(f"shard_tokens must be a positive int, got {shard_tokens!r}")

    dtype = token_dtype(tokenizer.vocab_size)
    val_start = _val_start(path, size, val_fraction)
    if val_start == 0:
        raise ValueError(f"corpus file {path} is too small to split off a val_fraction of {val_fraction}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        counts = {}
        for split, (start, end) in {"train": (0, val_start), "val": (val_start, size)}.items():
            writer = _ShardWriter(staging, split, dtype, shard_tokens)
            try:
                _encode_range(path, start, end, tokenizer, writer, chunk_bytes)
            finally:
                writer.close()
            counts[split] = writer.counts
        tokenizer.save(staging / TOKENIZER_FILE)
        meta = {
            "format": FORMAT,
            "version": 1,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer_kind": tokenizer.kind,
            "source": str(path.resolve()),
            "source_bytes": size,
            "val_fraction": val_fraction,
            "val_start_byte": val_start,
            "shard_tokens": shard_tokens,
            "splits": {
                split: {
                    "tokens": sum(c),
                    "shards": [{"file": shard_name(split, i), "tokens": n} for i, n in enumerate(c)],
                }
                for split, c in counts.items()
            },
        }
        _install(staging, out, meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CorpusInfo(
        out_dir=out,
        train_tokens=sum(counts["train"]),
        val_tokens=sum(counts["val"]),
        train_shards=len(counts["train"]),
        val_shards=len(counts["val"]),
        dtype=dtype.name,
        vocab_size=tokenizer.vocab_size,
        source_bytes=size,
        val_start_byte=val_start,
    )


def _install(staging: Path, out: Path, meta: dict) -> None:
    """Replace the previous preparation in ``out`` with the staged one.

    meta.json goes first (removed) and last (written): a folder with a meta.json always
    holds the complete shards it lists.
    """
    (out / META_FILE).unlink(missing_ok=True)
    for old in list(out.glob("train_*.bin")) + list(out.glob("val_*.bin")):
        old.unlink()
    for new in staging.iterdir():
        os.replace(new, out / new.name)
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=1))


# ---------------------------------------------------------------------- reading
def read_meta(out_dir: str | os.PathLike) -> dict:
    """The meta.json of a prepared folder, with a clear error when it is not one."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no prepared corpus ({META_FILE} missing); run prepare_corpus first")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} meta file")
    return meta


class TokenShards:
    """One split of a prepared corpus as a single read-only sequence of token ids."""

    def __init__(self, out_dir: str | os.PathLike, split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.meta = read_meta(out_dir)
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        self.vocab_size: int = self.meta["vocab_size"]
        self.shards: list[np.memmap] = []
        for entry in self.meta["splits"][split]["shards"]:
            path = self.out_dir / entry["file"]
            expected = entry["tokens"] * self.dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise ValueError(f"shard {path} is missing or not {expected} bytes; prepare the corpus again")
            self.shards.append(np.memmap(path, dtype=self.dtype, mode="r", shape=(entry["tokens"],)))
        # offsets[i] = global index of shard i's first token; offsets[-1] = total
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, global_start: int, length: int) -> np.ndarray:
        """Tokens [global_start, global_start + length) as int64, across shard ends if needed."""
        end = global_start + length
        if global_start < 0 or length < 0 or end > len(self):
            raise IndexError(
                f"window [{global_start}, {end}) is outside the {self.split} split of {len(self)} tokens"
            )
        out = np.empty(length, dtype=np.int64)  # (length,)
        shard = int(np.searchsorted(self.offsets, global_start, side="right")) - 1
        filled = 0
        while filled < length:
            local = global_start + filled - int(self.offsets[shard])
            take = min(length - filled, len(self.shards[shard]) - local)
            out[filled : filled + take] = self.shards[shard][local : local + take]
            filled += take
            shard += 1
        return out

    def __repr__(self) -> str:
        return f"TokenShards({str(self.out_dir)!r}, {self.split!r}: {len(self):,} tokens in {len(self.shards)} shards)"


class WindowSampler:
    """Random (B, seq_len + 1) windows of a split, a pure function of (seed, step).

    ``batch(step)`` seeds a fresh generator from ``[seed, step]``, so a run resumed at
    step N draws exactly the batches an unstopped run would, with no sampler state to
    save. Under data parallelism every rank draws the same global batch of
    ``batch_size * world_size`` windows and keeps its own slice of ``batch_size`` rows:
    the ranks' batches are disjoint and together make up the global batch.
    """

    def __init__(
        self,
        shards: TokenShards,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("world_size", world_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if len(shards) < seq_len + 1:
            raise ValueError(
                f"the {shards.split} split has {len(shards)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                "use a shorter seq_len or more text"
            )
        self.shards, self.batch_size, self.seq_len, self.seed = shards, batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size

    def starts(self, step: int) -> np.ndarray:
        """This rank's window start offsets for ``step``: (batch_size,) int64."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng([self.seed, step])
        n_starts = len(self.shards) - self.seq_len  # last valid start leaves seq_len + 1 tokens
        global_starts = rng.integers(0, n_starts, size=self.batch_size * self.world_size)  # (B * world,)
        return global_starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def batch(self, step: int) -> torch.Tensor:
        """(batch_size, seq_len + 1) int64 token ids; inputs are [:, :-1], targets [:, 1:]."""
        rows = [self.shards.window(int(s), self.seq_len + 1) for s in self.starts(step)]
        return torch.from_numpy(np.stack(rows))  # (B, T + 1)

    def __repr__(self) -> str:
        return (f"WindowSampler({self.shards.split}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"seed={self.seed}, rank={self.rank}/{self.world_size})")


__all__ = ["CorpusInfo", "prepare_corpus", "TokenShards", "WindowSampler", "read_meta", "token_dtype"]
