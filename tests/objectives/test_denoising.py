"""T5 span corruption and BART text infilling: statistics, and that nothing is lost."""

import numpy as np
import pytest
import torch

from tfamily.objectives.base import SeededRows, seeded_rows
from tfamily.objectives.denoising import (DENOISING_SALT, DenoisingObjective, SpanCorruptionObjective, corrupt_spans,
                                          infill_spans, permute_sentences, span_corruption_mask)

SENTINELS = list(range(999, 899, -1))  # <extra_id_0> = 999, <extra_id_1> = 998, ... as T5 counts down


def test_span_corruption_statistics():
    """15 % noise, spans of mean length 3, the text starting with kept tokens."""
    rng = np.random.default_rng(0)
    masks = [span_corruption_mask(100, 0.15, 3.0, rng) for _ in range(500)]
    assert all(m.sum() == 15 and not m[0] for m in masks)
    edges = [np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0])) for m in masks]  # span starts and ends
    lengths = np.concatenate([e[1::2] - e[::2] for e in edges])
    assert lengths.mean() == pytest.approx(3.0, abs=0.01)  # 15 tokens in round(15 / 3) = 5 spans


def test_source_and_target_together_give_back_the_text():
    """Putting each target span back in place of its sentinel in the source restores the text."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 800, 57).tolist()
    src, tgt = corrupt_spans(ids, span_corruption_mask(len(ids), 0.15, 3.0, rng), SENTINELS)
    spans, current = {}, None
    for t in tgt:
        if t in SENTINELS:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    restored = [t for s in src for t in (spans[s] if s in SENTINELS else [s])]
    assert restored == ids
    assert tgt[-1] == SENTINELS[sum(s in SENTINELS for s in src)]  # one closing sentinel


def test_span_corruption_batch_is_a_pure_function_of_the_seeds():
    obj = SpanCorruptionObjective(SENTINELS, pad_id=0, start_id=1, eos_id=2)
    windows = torch.randint(3, 800, (4, 40))
    a = obj.prepare(seeded_rows(windows, 7, 3, DENOISING_SALT))
    b = obj.prepare(seeded_rows(windows, 7, 3, DENOISING_SALT))
    c = obj.prepare(seeded_rows(windows, 7, 4, DENOISING_SALT))
    assert torch.equal(a.inputs["src_ids"], b.inputs["src_ids"]) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs["src_ids"], c.inputs["src_ids"])
    half = obj.prepare(seeded_rows(windows, 7, 3, DENOISING_SALT)[:2])  # micro-batches see the same corruption
    assert torch.equal(half.inputs["src_ids"], a.inputs["src_ids"][:2, :half.inputs["src_ids"].shape[1]])


def test_text_infilling_masks_about_thirty_percent_in_poisson_spans():
    rng = np.random.default_rng(2)
    kept, masks = [], []
    for _ in range(300):
        ids = list(range(10, 110))
        out = infill_spans(ids, mask_id=3, ratio=0.3, poisson=3.0, rng=rng)
        kept.append(sum(t != 3 for t in out))
        masks.append(out.count(3))
        assert [t for t in out if t != 3] == [t for t in ids if t in set(out)]  # order kept, nothing invented
    covered = 1 - np.mean(kept) / 100
    assert 0.22 < covered <= 0.30  # overlapping spans merge, so a little under the 30 % budget
    assert np.mean(masks) > 5  # about 30 / 3 spans, fewer where they merge


def test_sentence_permutation_keeps_every_sentence():
    rng = np.random.default_rng(3)
    ids = [5, 6, 1, 7, 1, 8, 9, 10, 1, 11, 1]  # 1 ends a sentence
    def sentences(xs):
        out, cur = [], []
        for t in xs:
            cur.append(t)
            if t == 1:
                out.append(tuple(cur))
                cur = []
        return out + ([tuple(cur)] if cur else [])

    orders = {tuple(permute_sentences(ids, {1}, rng)) for _ in range(30)}
    assert len(orders) > 1  # it does shuffle
    for out in orders:  # and every order holds the same sentences, each intact
        assert sorted(sentences(list(out))) == sorted(sentences(ids))


def test_denoising_target_is_the_original_text():
    obj = DenoisingObjective(mask_id=3, pad_id=0, start_id=1, eos_id=2, sentence_ends=[4])
    windows = torch.randint(5, 50, (3, 30))
    batch = obj.prepare(SeededRows(windows, np.array([1, 2, 3])))
    assert torch.equal(batch.targets[:, :30], windows)  # then EOS
    assert (batch.inputs["src_ids"] == 3).any()
