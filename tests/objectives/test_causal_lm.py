import math

import pytest
import torch

from tfamily.objectives import IGNORE_INDEX, CausalLMObjective


def test_prepare_shifts_targets_by_one():
    w = torch.arange(10).view(2, 5)
    batch = CausalLMObjective().prepare(w)
    assert batch.inputs["ids"].tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]
    assert batch.targets.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9]]
    assert batch.n_tokens == 8


def test_loss_is_mean_nll_and_ignores_index():
    obj = CausalLMObjective()
    batch = obj.prepare(torch.tensor([[0, 1, 2]]))
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
    assert obj.loss(logits, batch).item() == pytest.approx(math.log(4))
    batch.targets[0, 1] = IGNORE_INDEX
    logits[0, 0, 1] = 10.0  # confident and right on the one counted target
    assert obj.loss(logits, batch).item() < 1e-3


def test_bad_windows_are_rejected():
    with pytest.raises(ValueError, match="T\\+1"):
        CausalLMObjective().prepare(torch.zeros(3, 1, dtype=torch.long))
