"""Per-head summaries on hand-made attention matrices: entropy (nats) and mean distance (tokens)."""

from __future__ import annotations

import math

import torch

from tfamily.inspect.attention import entropy, mean_distance


def test_uniform_rows():
    probs = torch.full((4, 4), 0.25)
    assert math.isclose(float(entropy(probs)), math.log(4), rel_tol=1e-6)
    # query i against keys 0..3: mean |i - j| is 1.5, 1, 1, 1.5
    assert math.isclose(float(mean_distance(probs)), 1.25, rel_tol=1e-6)


def test_one_key_per_row():
    eye = torch.eye(5)
    assert float(entropy(eye)) == 0.0  # no NaN from the zeros
    assert float(mean_distance(eye)) == 0.0
    previous = torch.zeros(4, 4)
    previous[0, 0] = 1.0
    previous[torch.arange(1, 4), torch.arange(0, 3)] = 1.0  # each token looks one back
    assert float(entropy(previous)) == 0.0
    assert math.isclose(float(mean_distance(previous)), 0.75, rel_tol=1e-6)  # (0 + 1 + 1 + 1) / 4


def test_split_rows_and_heads():
    probs = torch.tensor([[[0.5, 0.5], [0.5, 0.5]],
                          [[1.0, 0.0], [0.0, 1.0]]])  # (H=2, T=2, S=2)
    e = entropy(probs)
    assert e.shape == (2,)
    assert math.isclose(float(e[0]), math.log(2), rel_tol=1e-6) and float(e[1]) == 0.0
    d = mean_distance(probs)
    assert math.isclose(float(d[0]), 0.5, rel_tol=1e-6) and float(d[1]) == 0.0


def test_distance_counts_memory_keys_before_the_queries():
    probs = torch.zeros(2, 4)  # 2 queries after 2 memory keys
    probs[:, 0] = 1.0  # both look at the oldest memory key
    assert math.isclose(float(mean_distance(probs)), 2.5, rel_tol=1e-6)  # query slots 2 and 3
    assert math.isclose(float(mean_distance(probs, offset=0)), 0.5, rel_tol=1e-6)
