"""Texts (or text pairs) -> padded model inputs, for classification, embeddings and tagging.

An encoder's tokenizer has [CLS] and [SEP]: a text becomes ``[CLS] a [SEP]`` and a pair
``[CLS] a [SEP] b [SEP]`` with segment ids 0 for the first part and 1 for the second, as
BERT was pretrained. A decoder's tokenizer has neither, and its text goes in as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class EncodedBatch:
    ids: torch.Tensor  # (B, T) long, right-padded
    attention_mask: torch.Tensor  # (B, T) bool, True = real token
    token_type_ids: torch.Tensor | None  # (B, T) long, or None when the tokenizer has no [SEP]
    word_ids: list[list[int | None]] | None = None  # per token: index of its word in the text (tagging)


def encode_pieces(tokenizer, a: list[int], b: list[int] | None, max_len: int) -> tuple[list[int], list[int]]:
    """(ids, segment ids) for one example, the longer part cut first until it fits ``max_len``."""
    cls, sep = tokenizer.special_ids.get("cls"), tokenizer.special_ids.get("sep")
    specials = (cls is not None) + (sep is not None) * (2 if b is not None else 1)
    a, b = list(a), (list(b) if b is not None else None)
    while len(a) + (len(b) if b is not None else 0) + specials > max_len:
        if b is not None and len(b) > len(a):
            b.pop()
        elif a:
            a.pop()
        else:
            raise ValueError(f"max_len={max_len} leaves no room for text")
    ids = ([cls] if cls is not None else []) + a + ([sep] if sep is not None else [])
    types = [0] * len(ids)
    if b is not None:
        tail = b + ([sep] if sep is not None else [])
        ids, types = ids + tail, types + [1] * len(tail)
    return ids, types


def encode_texts(tokenizer, texts: Sequence[str], max_len: int, texts_b: Sequence[str] | None = None,
                 pad_id: int | None = None) -> EncodedBatch:
    """Tokenise and pad a batch of texts (or pairs) into model inputs."""
    if texts_b is not None and len(texts_b) != len(texts):
        raise ValueError(f"{len(texts)} first texts but {len(texts_b)} second texts")
    first = tokenizer.encode_batch(list(texts))
    second = tokenizer.encode_batch(list(texts_b)) if texts_b is not None else [None] * len(first)
    rows = [encode_pieces(tokenizer, a, b, max_len) for a, b in zip(first, second)]
    return pad_rows(rows, tokenizer.pad_id if pad_id is None else pad_id,
                    with_types=tokenizer.special_ids.get("sep") is not None)


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int | None, with_types: bool) -> EncodedBatch:
    width = max(1, max(len(ids) for ids, _ in rows))
    ids = torch.full((len(rows), width), pad_id or 0, dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, segs) in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        types[i, :len(row)] = torch.tensor(segs, dtype=torch.long)
        mask[i, :len(row)] = True
    return EncodedBatch(ids, mask, types if with_types else None)


class ExampleBatches:
    """Batches of ``batch_size`` examples from a list, each epoch in a new random order;
    ``batch(step)`` is a pure function of (seed, step), so training resumes exactly. With
    ``shuffle=False`` (evaluation) batches come in order and ``len()`` counts them.

    With ``lengths`` (one per example, e.g. characters), batches group examples of similar
    length, so little of each batch is padding: each epoch's random order is cut into pools of
    ``pool`` batches, each pool is sorted by length and cut into batches, and the epoch's
    batches are then shuffled. Every example still comes once per epoch."""

    def __init__(self, examples: Sequence, batch_size: int, seed: int = 0, shuffle: bool = True,
                 lengths: Sequence[int] | None = None, pool: int = 64):
        if not examples:
            raise ValueError("no examples to batch")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if lengths is not None and len(lengths) != len(examples):
            raise ValueError(f"{len(lengths)} lengths for {len(examples)} examples")
        self.examples, self.batch_size, self.seed, self.shuffle = list(examples), batch_size, seed, shuffle
        self.lengths, self.pool = (list(lengths) if lengths is not None else None), pool
        self.per_epoch = -(-len(self.examples) // batch_size) if not shuffle else max(1, len(self.examples) // batch_size)
        self._cached: tuple[int, list] | None = None  # (epoch, its batches of indices) when grouping by length

    def __len__(self) -> int:
        return self.per_epoch

    def batch(self, step: int) -> list:
        import numpy as np
        epoch, i = divmod(step, self.per_epoch)
        if self.shuffle and self.lengths is not None:
            return [self.examples[j] for j in self._grouped(epoch)[i]]
        order = (np.random.default_rng([self.seed, epoch]).permutation(len(self.examples)) if self.shuffle
                 else np.arange(len(self.examples)))
        return [self.examples[j] for j in order[i * self.batch_size:(i + 1) * self.batch_size]]

    def _grouped(self, epoch: int) -> list:
        import numpy as np
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.examples))
            size = min(self.batch_size, len(order))
            order = order[:self.per_epoch * size]
            lengths = np.asarray(self.lengths)
            pooled = np.concatenate([p[np.argsort(lengths[p], kind="stable")]
                                     for p in np.split(order, range(size * self.pool, len(order), size * self.pool))])
            batches = [pooled[k:k + size] for k in range(0, len(pooled), size)]
            self._cached = (epoch, [batches[k] for k in rng.permutation(len(batches))])
        return self._cached[1]
