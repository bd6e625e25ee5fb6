import pytest
import torch

from tfamily.generation import SamplingParams, filters, pick


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    out = filters.top_k(logits, 2)
    assert torch.isinf(out[0, [0, 2]]).all() and out[0, 1] == 5 and out[0, 3] == 4


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filters.top_p(logits, 0.75))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.75, 0.5 + 0.3 >= 0.75
    assert torch.isfinite(filters.top_p(logits, 0.01))[0].tolist() == [True, False, False, False]
    assert torch.equal(filters.top_p(logits, 1.0), logits)


def test_top_p_works_on_unsorted_rows():
    logits = torch.tensor([[0.1, 3.0, 2.0], [2.0, 0.1, 3.0]])
    kept = torch.isfinite(filters.top_p(logits, 0.6))
    assert kept.tolist() == [[False, True, False], [False, False, True]]


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    assert filters.repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 2.0]]


def test_temperature_scales_and_rejects_nonpositive():
    assert filters.temperature(torch.tensor([[2.0]]), 0.5).item() == 4.0
    with pytest.raises(ValueError):
        filters.temperature(torch.tensor([[1.0]]), 0)


def test_greedy_and_seeded_sampling():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    assert pick(logits, SamplingParams(temperature=0), None, None).item() == 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws1 = [pick(logits, SamplingParams(), None, g1).item() for _ in range(20)]
    draws2 = [pick(logits, SamplingParams(), None, g2).item() for _ in range(20)]
    assert draws1 == draws2 and len(set(draws1)) > 1


def test_top_k_one_is_greedy_whatever_the_temperature():
    logits = torch.randn(4, 50)
    chosen = pick(logits, SamplingParams(temperature=5.0, top_k=1), None, torch.Generator().manual_seed(0))
    assert torch.equal(chosen, logits.argmax(-1))


@pytest.mark.parametrize("kw", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5),
                                dict(repetition_penalty=0), dict(top_k=-2)])
def test_bad_sampling_params_are_rejected(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)


def test_limits_fp32_cannot_compute_are_read_as_their_limits():
    """A top_p below fp32's resolution keeps the top token (it used to drop all: NaN), and a
    temperature below MIN_TEMPERATURE is greedy (logits / t would overflow to inf)."""
    from tfamily.generation.decode import SamplingParams, pick
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    kept = torch.isfinite(filters.top_p(logits, 1e-46))
    assert kept.tolist() == [[False, True, False]]
    gen = torch.Generator().manual_seed(0)
    for t in (5e-324, 1e-300, 1e-6):
        assert pick(logits, SamplingParams(temperature=t), None, gen).tolist() == [1]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_pick_is_the_token_the_chain_keeps(penalty):
    """pick's greedy shortcut takes the token the chain's greedy row would keep, with the
    repetition penalty applied first (the one ranking both follow)."""
    torch.manual_seed(0)
    logits = torch.randn(5, 300)
    seen = torch.rand(5, 300) > 0.7 if penalty != 1.0 else None
    kept = filters.chain(logits, 0.0, None, None, seen, penalty)
    chosen = pick(logits, SamplingParams(temperature=0, repetition_penalty=penalty), seen, None)
    assert torch.equal(chosen, kept.argmax(-1)) and (kept.gather(-1, chosen[:, None]) == 0).all()
    if seen is not None:  # and the penalty does change some row's choice
        assert not torch.equal(chosen, logits.argmax(-1))
