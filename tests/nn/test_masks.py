import torch

from tfamily.nn.masks import attend_to_self, causal_mask, combine, encoder_mask, padding_mask
from tfamily.nn.positions import positions_from_mask, sinusoid_table


def test_causal_mask_square_is_lower_triangular():
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


def test_causal_mask_with_cache_offset():
    # 2 new queries after 3 cached positions: query 0 is position 3, query 1 is position 4
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_padding_mask_blocks_padded_keys_for_every_query():
    valid = torch.tensor([[False, True, True]])
    m = combine(causal_mask(3, 3)[None, None], padding_mask(valid))
    assert m.shape == (1, 1, 3, 3)
    assert not m[0, 0, :, 0].any()
    assert m[0, 0, 2].tolist() == [False, True, True]


def test_attend_to_self_fills_empty_rows_only_on_the_diagonal():
    m = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    out = attend_to_self(m, 3, 3)
    assert torch.equal(out[0, 0], torch.eye(3, dtype=torch.bool))


def test_combine_ignores_none():
    m = causal_mask(2, 2)
    assert combine(None, m, None) is m
    assert combine(None) is None


def test_positions_skip_left_padding_and_continue_offsets():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert positions_from_mask(mask[:, -1:], offset=7).tolist() == [[7], [7]]


def test_sinusoid_table_matches_the_paper_formula():
    t = sinusoid_table(50, 16)
    p, i = 13, 3
    assert abs(t[p, 2 * i] - torch.sin(torch.tensor(p / 10000 ** (2 * i / 16)))) < 1e-6
    assert abs(t[p, 2 * i + 1] - torch.cos(torch.tensor(p / 10000 ** (2 * i / 16)))) < 1e-6


def test_encoder_mask_is_none_without_padding_and_masks_padded_keys_otherwise():
    assert encoder_mask(torch.ones(2, 5, dtype=torch.bool)) is None
    valid = torch.tensor([[True, True, False], [True, True, True]])
    mask = encoder_mask(valid)  # (B, 1, T, T)
    assert mask.shape == (2, 1, 3, 3)
    assert not mask[0, 0, 0, 2] and mask[0, 0, 2, 2] and mask[1].all()


def test_a_decoding_steps_mask_is_the_general_formula_and_leaves_the_callers_tensor_alone():
    from tfamily.nn.masks import decoder_mask

    key_valid = torch.tensor([[True, True, True, False], [False, True, True, False]])
    before = key_valid.clone()
    mask, is_causal = decoder_mask(1, 4, key_valid)
    general = attend_to_self(combine(causal_mask(1, 4)[None, None], padding_mask(key_valid)), 1, 4)
    assert not is_causal and mask.dtype == torch.bool and torch.equal(mask, general)
    assert torch.equal(key_valid, before)  # the new token's column was set on a copy
