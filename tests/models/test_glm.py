"""GLM's mask, 2-D positions and model against naive constructions written out here."""

import pytest
import torch

from tfamily.config import ConfigError
from tfamily.models import build_model
from tfamily.nn.masks import glm_mask
from tfamily.nn.positions import GLMPositions
from tfamily.presets import PRESETS


def naive_mask(part_a_len, t_q, t_k, key_valid=None):
    """Query slot i (the last t_q of t_k) may see key j: both rules spelled out one pair at a time."""
    b = len(part_a_len)
    out = torch.zeros(b, 1, t_q, t_k, dtype=torch.bool)
    for r in range(b):
        for qi in range(t_q):
            i = qi + t_k - t_q
            for j in range(t_k):
                in_a = j < part_a_len[r]  # everyone sees Part A
                causal_b = j <= i  # Part B sees itself up to here (a Part A query has no such key)
                real = key_valid is None or bool(key_valid[r, j])
                out[r, 0, qi, j] = (in_a or causal_b) and real or i == j
    return out


@pytest.mark.parametrize("t_q", [7, 3, 1])
def test_mask_matches_the_naive_construction(t_q):
    part_a_len = torch.tensor([3, 7, 0, 5])
    valid = torch.ones(4, 7, dtype=torch.bool)
    valid[1, 5:] = False  # right padding
    valid[3, :2] = False  # left padding
    for key_valid in (None, valid):
        got = glm_mask(part_a_len, t_q, 7, key_valid)
        assert torch.equal(got, naive_mask(part_a_len.tolist(), t_q, 7, key_valid))


def test_mask_rows_in_words():
    m = glm_mask(torch.tensor([2]), 4, 4)[0, 0].int().tolist()
    assert m == [[1, 1, 0, 0],  # Part A sees Part A only
                 [1, 1, 0, 0],
                 [1, 1, 1, 0],  # Part B: Part A and itself, causally
                 [1, 1, 1, 1]]


def test_2d_positions_add_two_tables():
    pos_mod = GLMPositions(16, 8)
    torch.nn.init.normal_(pos_mod.block.weight)
    torch.nn.init.normal_(pos_mod.span.weight)
    pos = torch.tensor([[[0, 1, 2, 2, 2], [0, 0, 0, 1, 2]]])  # (1, 2, 5)
    want = torch.stack([pos_mod.block.weight[a] + pos_mod.span.weight[s] for a, s in zip(*pos[0].tolist())])
    torch.testing.assert_close(pos_mod(pos)[0], want)
    with pytest.raises(ValueError, match="batch, 2, tokens"):
        pos_mod(pos[:, 0])


def tiny(**changes):
    fields = dict(vocab_size=50, d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=32, decoder_start_token_id=1)
    torch.manual_seed(0)
    return build_model(PRESETS["glm-tiny"].config(**{**fields, **changes})).eval()


def example():
    """Part A: 5 tokens (a blank at 2); Part B: [S] and two span tokens filling it."""
    ids = torch.tensor([[10, 11, 3, 12, 13, 1, 20, 21]])
    positions = torch.tensor([[[0, 1, 2, 3, 4, 2, 2, 2], [0, 0, 0, 0, 0, 1, 2, 3]]])
    return ids, positions, torch.tensor([5])


def test_part_a_is_bidirectional_and_blind_to_part_b():
    model = tiny()
    ids, pos, la = example()
    base = model(ids, positions=pos, part_a_len=la).logits
    changed_b = ids.clone()
    changed_b[0, 6] = 30
    out = model(changed_b, positions=pos, part_a_len=la).logits
    torch.testing.assert_close(out[:, :6], base[:, :6])  # Part A and the [S] before it: unchanged
    assert not torch.allclose(out[:, 7], base[:, 7])  # a later Part B token sees it
    changed_a = ids.clone()
    changed_a[0, 4] = 30
    out = model(changed_a, positions=pos, part_a_len=la).logits
    assert not torch.allclose(out[:, 0], base[:, 0])  # the first Part A token sees the last one


def test_positions_change_the_output_and_are_required_for_part_b():
    model = tiny()
    ids, pos, la = example()
    moved = pos.clone()
    moved[0, 0, 5:] = 4  # the span claims the blank at 4 instead of 2
    assert not torch.allclose(model(ids, positions=pos, part_a_len=la).logits[:, 5:],
                              model(ids, positions=moved, part_a_len=la).logits[:, 5:])
    with pytest.raises(ValueError, match="positions"):
        model(ids, part_a_len=la)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids, positions=pos + 40, part_a_len=la)


def test_cached_part_b_equals_the_whole_row():
    model = tiny()
    ids, pos, la = example()
    whole = model(ids, positions=pos, part_a_len=la).logits
    cache = model.make_cache(1, 8)
    first = model(ids[:, :5], cache=cache).logits  # Part A: the default positions 0..4
    rest = [model(ids[:, i:i + 1], positions=pos[:, :, i:i + 1], part_a_len=la, cache=cache).logits for i in range(5, 8)]
    torch.testing.assert_close(torch.cat([first, *rest], 1), whole, atol=1e-5, rtol=0)


def test_config_keeps_glm_and_its_positions_together():
    with pytest.raises(ConfigError, match="glm_2d"):
        PRESETS["glm-tiny"].config(position="learned")
    with pytest.raises(ConfigError, match="glm_2d"):
        PRESETS["gpt-tiny"].config(position="glm_2d")
    with pytest.raises(ConfigError, match="head"):
        PRESETS["glm-tiny"].config(head="sequence_classification")


def test_glm_base_has_the_papers_size():
    with torch.device("meta"):
        model = build_model(PRESETS["glm-base"].config())
    n = sum(p.numel() for p in model.parameters())
    assert 105e6 < n < 115e6  # GLM-Base: 110M (Du et al. 2022, Table 1)
