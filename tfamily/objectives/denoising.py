"""Denoising objectives for encoder-decoder pretraining: T5's span corruption and BART's
text infilling + sentence permutation. Both turn a window of text into (corrupted source,
target) and reuse ``Seq2SeqObjective`` for batching and the loss.

T5 (Raffel et al. 2020, section 3.1.4), noise density 15 %, mean span length 3::

    text     Thank you for inviting me to your party last week .
    source   Thank you <X> me to your party <Y> week .
    target   <X> for inviting <Y> last <Z>

The noise tokens are split into spans, each replaced in the source by one sentinel; the
target lists the spans, each after its sentinel, and ends with one more sentinel.

BART (Lewis et al. 2020, section 2.2), text infilling: spans with Poisson(3) lengths (some
of length 0, which insert a mask) are each replaced by a single [MASK] until 30 % of the
tokens are covered; sentence permutation shuffles the sentences first. The target is the
original text: the decoder reconstructs everything.

Randomness comes from a generator seeded per row by the raw batch, so corruption is a pure
function of the sampler's (seed, step): exact resume, fixed validation batches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import Batch, SeededRows
from .seq2seq import Seq2SeqObjective

DENOISING_SALT = (0x5EED,)  # their seed stream: SeededWindows(sampler, seed, trim_last=True, salt=DENOISING_SALT)


# ---------------------------------------------------------------------- T5
def random_segmentation(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``n_items`` into ``n_segments`` non-empty parts at random: (n_segments,) lengths."""
    cuts = np.sort(rng.choice(np.arange(1, n_items), size=n_segments - 1, replace=False)) if n_segments > 1 else []
    return np.diff(np.concatenate([[0], cuts, [n_items]])).astype(np.int64)


def span_corruption_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """(length,) bool noise mask: round(length * density) noise tokens in about
    noise / mean_span spans, alternating with non-noise spans, the text starting with non-noise."""
    n_noise = min(max(int(round(length * density)), 1), length - 1)
    n_spans = max(1, min(int(round(n_noise / mean_span)), n_noise, length - n_noise))
    noise = random_segmentation(n_noise, n_spans, rng)
    keep = random_segmentation(length - n_noise, n_spans, rng)
    mask = np.zeros(length, dtype=bool)
    pos = 0
    for k, z in zip(keep, noise):
        pos += k
        mask[pos:pos + z] = True
        pos += z
    return mask


def corrupt_spans(ids: Sequence[int], mask: np.ndarray, sentinels: Sequence[int]) -> tuple[list[int], list[int]]:
    """(source, target) from ids and a noise mask: each noise span becomes the next sentinel in
    the source, and in the target the sentinel is followed by the span; one closing sentinel."""
    source, target, s = [], [], 0
    for i, token in enumerate(ids):
        if mask[i]:
            if i == 0 or not mask[i - 1]:  # a span starts
                if s + 1 >= len(sentinels):
                    raise ValueError(f"more noise spans than the {len(sentinels)} sentinel tokens can name")
                source.append(sentinels[s])
                target.append(sentinels[s])
                s += 1
            target.append(int(token))
        else:
            source.append(int(token))
    target.append(sentinels[s])
    return source, target


class SpanCorruptionObjective:
    defer_head = True  # its loss is Seq2SeqObjective's, which applies the LM head itself

    def __init__(self, sentinels: Sequence[int], pad_id: int, start_id: int, eos_id: int,
                 density: float = 0.15, mean_span: float = 3.0, label_smoothing: float = 0.0):
        if len(sentinels) < 2:
            raise ValueError("span corruption needs sentinel tokens (<extra_id_0>, <extra_id_1>, ...)")
        if not 0.0 < density < 1.0 or mean_span < 1.0:
            raise ValueError(f"density must be in (0, 1) and mean_span >= 1; got {density}, {mean_span}")
        self.sentinels, self.density, self.mean_span = list(sentinels), density, mean_span
        self.seq2seq = Seq2SeqObjective(pad_id, start_id, eos_id, label_smoothing)

    def pairs(self, raw: SeededRows) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for ids, seed in zip(raw.ids.tolist(), raw.seeds.tolist()):
            mask = span_corruption_mask(len(ids), self.density, self.mean_span, np.random.default_rng(seed))
            src, tgt = corrupt_spans(ids, mask, self.sentinels)
            out.append((np.array(src), np.array(tgt)))
        return out

    def prepare(self, raw: SeededRows) -> Batch:
        return self.seq2seq.prepare(self.pairs(raw))

    def loss(self, output, batch: Batch) -> torch.Tensor:
        return self.seq2seq.loss(output, batch)


# ---------------------------------------------------------------------- BART
def permute_sentences(ids: Sequence[int], sentence_ends: set[int], rng: np.random.Generator) -> list[int]:
    """The sentences of ``ids`` (each ending at a token in ``sentence_ends``; a trailing part
    without one counts as a sentence) in a random order."""
    sentences, current = [], []
    for token in ids:
        current.append(int(token))
        if token in sentence_ends:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    order = rng.permutation(len(sentences))
    return [t for i in order for t in sentences[i]]


def infill_spans(ids: Sequence[int], mask_id: int, ratio: float, poisson: float,
                 rng: np.random.Generator) -> list[int]:
    """Text infilling: span lengths drawn from Poisson(``poisson``) until they add up to
    ``ratio`` of the tokens, each span put at a distinct random start and replaced by one
    ``mask_id`` (overlapping spans merge into one). A span of length 0 inserts a mask, so
    the model also learns that sometimes nothing is missing."""
    n = len(ids)
    budget = int(round(n * ratio))
    lengths: list[int] = []
    while sum(lengths) < budget and len(lengths) < n:
        lengths.append(int(rng.poisson(poisson)))
    if lengths and sum(lengths) > budget:
        lengths[-1] -= sum(lengths) - budget  # the total is exactly the budget
    starts = rng.choice(n, size=len(lengths), replace=False) if lengths else []
    covered = np.zeros(n, dtype=bool)
    insert_at = set()
    for start, length in zip(starts, lengths):
        if length == 0:
            insert_at.add(int(start))
        covered[start:start + length] = True
    out: list[int] = []
    for i, token in enumerate(ids):
        if i in insert_at and not covered[i] and (not out or out[-1] != mask_id):
            out.append(mask_id)
        if not covered[i]:
            out.append(int(token))
        elif i == 0 or not covered[i - 1]:  # a masked run starts: one mask for all of it
            out.append(mask_id)
    return out


class DenoisingObjective:
    defer_head = True  # its loss is Seq2SeqObjective's, which applies the LM head itself

    def __init__(self, mask_id: int, pad_id: int, start_id: int, eos_id: int, sentence_ends: Sequence[int] = (),
                 ratio: float = 0.3, poisson: float = 3.0, permute: bool = True, label_smoothing: float = 0.0):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}")
        self.mask_id, self.ratio, self.poisson, self.permute = mask_id, ratio, poisson, permute
        self.sentence_ends = set(sentence_ends)
        self.seq2seq = Seq2SeqObjective(pad_id, start_id, eos_id, label_smoothing)

    def pairs(self, raw: SeededRows) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for ids, seed in zip(raw.ids.tolist(), raw.seeds.tolist()):
            rng = np.random.default_rng(seed)
            text = permute_sentences(ids, self.sentence_ends, rng) if self.permute and self.sentence_ends else ids
            out.append((np.array(infill_spans(text, self.mask_id, self.ratio, self.poisson, rng)), np.array(ids)))
        return out

    def prepare(self, raw: SeededRows) -> Batch:
        return self.seq2seq.prepare(self.pairs(raw))

    def loss(self, output, batch: Batch) -> torch.Tensor:
        return self.seq2seq.loss(output, batch)
