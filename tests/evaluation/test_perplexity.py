import math

import pytest
import torch
import torch.nn.functional as F

from tfamily.evaluation import perplexity
from tfamily.evaluation.perplexity import _windows
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset("gpt-tiny").config()).replace(max_seq_len=16)).eval()


def test_short_text_is_plain_cross_entropy(model):
    ids = torch.randint(0, model.cfg.vocab_size, (12,))
    want = F.cross_entropy(model(ids[None]).logits[0, :-1], ids[1:]).item()
    r = perplexity(model, ids)
    assert r.tokens == 11 and r.nll == pytest.approx(want, rel=1e-5)
    assert r.perplexity == pytest.approx(math.exp(want), rel=1e-5)


@pytest.mark.parametrize("stride", [1, 5, 8, 16])
def test_every_token_scored_once_with_history(stride):
    n, context = 53, 16
    scored = []
    for start, end, first in _windows(n, context, stride):
        assert end - start <= context and first >= 1
        scored += range(start + first, end)
    assert scored == list(range(1, n))


def test_batched_windows_equal_one_at_a_time(model):
    ids = torch.randint(0, model.cfg.vocab_size, (61,))
    a = perplexity(model, ids, stride=6, batch_size=1)
    b = perplexity(model, ids, stride=6, batch_size=8)
    assert a.tokens == b.tokens == 60
    assert a.nll == pytest.approx(b.nll, rel=1e-5)


def test_bits_per_byte():
    from tfamily.evaluation import PerplexityResult
    r = PerplexityResult(tokens=10, nll=math.log(2), bytes=20)
    assert r.bits_per_byte == pytest.approx(0.5)
