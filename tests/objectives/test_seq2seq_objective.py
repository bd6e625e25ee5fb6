import math

import numpy as np
import pytest
import torch

from tfamily.objectives import IGNORE_INDEX, Seq2SeqObjective


def test_prepare_shifts_the_target_and_ignores_padding():
    obj = Seq2SeqObjective(pad_id=0, start_id=1, eos_id=2)
    batch = obj.prepare([(np.array([5, 6, 7]), np.array([8, 9])), (np.array([5]), np.array([10, 11, 12]))])
    assert batch.inputs["src_ids"].tolist() == [[5, 6, 7, 2], [5, 2, 0, 0]]
    assert batch.inputs["src_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.inputs["tgt_ids"].tolist() == [[1, 8, 9, 0], [1, 10, 11, 12]]
    assert batch.targets.tolist() == [[8, 9, 2, IGNORE_INDEX], [10, 11, 12, 2]]
    assert batch.n_tokens == 7


def test_label_smoothing_loss_matches_its_definition():
    """(1 - eps) * NLL + eps * mean over the vocabulary of -log p, averaged over real tokens."""
    obj = Seq2SeqObjective(0, 1, 2, label_smoothing=0.1)
    batch = obj.prepare([(np.array([5]), np.array([8, 9]))])
    logits = torch.randn(1, 3, 12)
    logp = logits.log_softmax(-1)[0]
    t = batch.targets[0]
    want = sum(0.9 * -logp[i, t[i]] + 0.1 * -logp[i].mean() for i in range(3)) / 3
    assert obj.loss(logits, batch).item() == pytest.approx(want.item(), rel=1e-5)
    assert math.isfinite(Seq2SeqObjective(0, 1, 2).loss(logits, batch).item())


def test_bad_label_smoothing_is_named():
    with pytest.raises(ValueError, match="label_smoothing"):
        Seq2SeqObjective(0, 1, 2, label_smoothing=1.0)
