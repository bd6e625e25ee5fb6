"""GLM's 2-D layout: the three functions every GLM caller builds its positions with."""

import torch

from tfamily.nn.positions import glm_in_span, glm_part_a, glm_row_positions


def test_row_positions_match_the_picture():
    """The row drawn in GLMPositions' docstring: Part A x1 x2 [M] x4 [M], then Part B writes
    the span of the blank at 4 ([S] x5 x6) before the span of the blank at 2 ([S] x3)."""
    got = glm_row_positions(5, [(4, 3), (2, 2)])
    assert got.tolist() == [[0, 1, 2, 3, 4, 4, 4, 4, 2, 2],
                            [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]]


def test_part_a_and_span_pieces_compose_to_the_row():
    """A decoding state feeds Part A (left padded) and then one span token at a time; the
    pieces it builds equal the whole training row's columns."""
    row = glm_row_positions(3, [(1, 4)])  # (2, 7)
    part_a = glm_part_a(torch.arange(3)[None])  # (1, 2, 3)
    steps = [glm_in_span(torch.tensor([[1]]), torch.tensor([[k]])) for k in range(4)]  # [S], then 3 tokens
    assert torch.equal(torch.cat([part_a, *steps], 2)[0], row)
    assert glm_part_a(torch.tensor([[0, 0, 1]])).tolist() == [[[0, 0, 1], [0, 0, 0]]]  # a padded row's Part A
