"""GLM blank infilling: Part A / Part B rows against a naive construction, span statistics,
gMASK, seeds."""

import math

import numpy as np
import pytest
import torch

from tfamily.objectives import IGNORE_INDEX
from tfamily.objectives.base import SeededWindows
from tfamily.objectives.glm import GLMObjective, GLMRaw, glm_row_limit
from tfamily.tokenizers import Tokenizer

MASK, S, E, PAD, GMASK = 90, 91, 92, 0, 93


def objective(**kw):
    return GLMObjective(MASK, S, E, PAD, GMASK, **kw)


def naive_row(tokens, spans, order, blank=MASK):
    """Part A / Part B written out by hand: ids, [position in Part A, position in span], targets."""
    ids, blank_at = [], {}
    i = 0
    while i < len(tokens):
        span = next((s for s in spans if s[0] == i), None)
        if span is None:
            ids.append(tokens[i])
            i += 1
        else:
            blank_at[span] = len(ids)
            ids.append(blank)
            i += span[1]
    block, inner, targets = list(range(len(ids))), [0] * len(ids), [IGNORE_INDEX] * len(ids)
    for k in order:
        start, length = spans[k]
        for j in range(length + 1):  # [S] x1 .. xl  ->  x1 .. xl [E]
            ids.append(S if j == 0 else tokens[start + j - 1])
            targets.append(tokens[start + j] if j < length else E)
            block.append(blank_at[spans[k]])
            inner.append(j + 1)
    return ids, [block, inner], targets


def test_row_matches_the_naive_construction():
    tokens = np.arange(1, 13)
    spans = [(2, 1), (4, 3), (7, 1), (8, 2)]  # touching spans stay separate blanks
    obj = objective()
    row = obj.build_row(tokens, spans, np.random.default_rng(5))
    order = np.random.default_rng(5).permutation(len(spans)).tolist()
    ids, pos, targets = naive_row(tokens.tolist(), spans, order)
    assert row.ids.tolist() == ids and row.positions.tolist() == pos and row.targets.tolist() == targets
    assert row.part_a_len == 12 - 7 + 4
    assert ids[:row.part_a_len] == [1, 2, MASK, 4, MASK, MASK, MASK, 11, 12]


def test_the_papers_figure():
    """x1..x6 with spans x3 and x5 x6 (Du et al. 2022, figure 2)."""
    row = objective().build_row(np.array([1, 2, 3, 4, 5, 6]), [(2, 1), (4, 2)], np.random.default_rng(0))
    assert row.ids[:5].tolist() == [1, 2, MASK, 4, MASK]
    seen = set()
    for seed in range(20):  # the spans come in random order; both orders have the paper's positions
        row = objective().build_row(np.array([1, 2, 3, 4, 5, 6]), [(2, 1), (4, 2)], np.random.default_rng(seed))
        b = [row.ids[5:].tolist(), row.positions[:, 5:].tolist(), row.targets[5:].tolist()]
        assert b in ([[S, 5, 6, S, 3], [[4, 4, 4, 2, 2], [1, 2, 3, 1, 2]], [5, 6, E, 3, E]],
                     [[S, 3, S, 5, 6], [[2, 2, 4, 4, 4], [1, 2, 1, 2, 3]], [3, E, 5, 6, E]])
        seen.add(b[0][1])
    assert seen == {3, 5}


def test_span_lengths_are_poisson_3_covering_15_percent():
    obj = objective()
    rng = np.random.default_rng(0)
    lengths, n = [], 400
    for _ in range(300):
        spans = obj.place_spans(n, obj.span_lengths(n, rng), rng)
        covered = sum(length for _, length in spans)
        assert covered == math.ceil(0.15 * n)  # 15 % exactly
        ends = sorted(spans)
        assert all(a[0] + a[1] <= b[0] for a, b in zip(ends, ends[1:]))  # no overlap
        assert all(0 <= s and s + l <= n for s, l in spans)
        lengths += [length for _, length in spans]
    mean = np.mean(lengths)
    # Poisson(3) without zeros has mean 3 / (1 - e^-3) = 3.16; the last span of a row is cut short
    assert 2.8 < mean < 3.3, mean
    assert 0.2 < np.mean(np.array(lengths) == 3) < 0.3  # P(3) = 0.224 / 0.95 = 0.236


def test_gmask_rows_blank_one_long_suffix():
    obj = objective(gmask_prob=1.0)
    tokens = np.arange(1, 21)
    for seed in range(50):
        row = obj.make_row(tokens, seed)
        (start, length), = row.spans
        assert start + length == 20 and 10 <= length <= 19
        assert row.ids[:row.part_a_len].tolist() == list(range(1, start + 1)) + [GMASK]
        assert row.ids[row.part_a_len:].tolist() == [S] + list(range(start + 1, 21))
        assert row.targets[row.part_a_len:].tolist() == list(range(start + 1, 21)) + [E]
        assert (row.positions[0, row.part_a_len:] == start).all()


def test_gmask_mix_ratio():
    obj = objective(gmask_prob=0.3)
    kinds = [obj.make_row(np.arange(1, 41), seed).ids.tolist().count(GMASK) for seed in range(1000)]
    assert 0.25 < np.mean(kinds) < 0.35


def test_batch_is_pure_of_the_seeds_and_padded_right():
    obj = objective(mask_ratio=0.3)
    raw = GLMRaw(torch.arange(1, 31).reshape(3, 10), torch.tensor([4, 5, 6]))
    a, b = obj.prepare(raw), obj.prepare(raw)
    for k in a.inputs:
        assert torch.equal(a.inputs[k], b.inputs[k])
    other = obj.prepare(GLMRaw(raw.ids, torch.tensor([7, 8, 9])))
    assert a.extra["spans"] != other.extra["spans"]
    real = a.inputs["attention_mask"]
    assert a.inputs["positions"].shape == (3, 2, real.shape[1])
    assert (a.inputs["ids"][~real] == PAD).all() and (a.targets[~real] == IGNORE_INDEX).all()
    for r in range(3):  # targets only in Part B: span tokens and one [E] per span
        la = int(a.inputs["part_a_len"][r])
        assert (a.targets[r, :la] == IGNORE_INDEX).all()
        assert (a.targets[r] == E).sum() == len(a.extra["spans"][r])
    assert a.n_tokens == int(real.sum())
    assert len(raw[1:]) == 2  # micro-batches slice rows and seeds together


def test_seeded_windows_are_pure_of_step():
    class Windows:
        def batch(self, step):
            return torch.full((4, 8), step)
    w = SeededWindows(Windows(), seed=3)
    assert torch.equal(w.batch(5).seeds, w.batch(5).seeds)
    assert not torch.equal(w.batch(5).seeds, w.batch(6).seeds)


def test_rows_fit_the_limit():
    obj = objective(gmask_prob=0.5)
    n = 65
    widths = [len(obj.make_row(np.arange(1, n + 1), s).ids) for s in range(300)]
    assert max(widths) <= glm_row_limit(n)
    with pytest.raises(ValueError, match="max_len=10"):
        objective(max_len=10).prepare(GLMRaw(torch.arange(1, 11)[None], torch.tensor([0])))


def test_loss_is_cross_entropy_over_part_b():
    obj = objective()
    batch = obj.prepare(GLMRaw(torch.arange(1, 21)[None], torch.tensor([1])))
    logits = torch.randn(1, batch.targets.shape[1], 100)
    keep = batch.targets != IGNORE_INDEX
    want = torch.nn.functional.cross_entropy(logits[keep], batch.targets[keep])
    torch.testing.assert_close(obj.loss(logits, batch), want)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="mask_ratio"):
        objective(mask_ratio=0)
    with pytest.raises(ValueError, match="gmask_id"):
        GLMObjective(MASK, S, E, PAD, None, gmask_prob=0.5)
    with pytest.raises(TypeError, match="GLMRaw"):
        objective().prepare(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="span_start"):
        GLMObjective.from_tokenizer(Tokenizer.train("char", ["abc"]))
