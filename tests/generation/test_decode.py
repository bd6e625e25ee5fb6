import pytest
import torch

from tfamily.generation import SamplingParams, decode
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset("gpt2-small").config())).eval()


def all_steps(model, prompts, **kw):
    return [s for group in decode(model, prompts, SamplingParams(**kw)) for s in group]


def test_steps_carry_the_models_probabilities(model):
    prompt = [5, 6, 7]
    steps = all_steps(model, [prompt], max_new_tokens=3, temperature=0, top_alternatives=4)
    probs = model(torch.tensor([prompt])).logits[0, -1].softmax(-1)
    first = steps[0]
    assert first.token == probs.argmax().item()
    assert first.prob == pytest.approx(probs.max().item(), rel=1e-5)
    assert [t for t, _ in first.alternatives] == probs.topk(4).indices.tolist()
    assert [p for _, p in first.alternatives] == pytest.approx(probs.topk(4).values.tolist(), rel=1e-5)
    assert [s.index for s in steps] == [0, 1, 2]
    assert steps[-1].finished and steps[-1].finish_reason == "length"


def test_stop_token_ends_only_that_sequence(model):
    greedy = all_steps(model, [[1, 2], [3, 4, 5]], max_new_tokens=5, temperature=0)
    stop = next(s.token for s in greedy if s.seq == 0)
    steps = all_steps(model, [[1, 2], [3, 4, 5]], max_new_tokens=5, temperature=0, stop_token_ids=[stop])
    seq0 = [s for s in steps if s.seq == 0]
    assert len(seq0) == 1 and seq0[0].finish_reason == "stop"
    seq1 = [s for s in steps if s.seq == 1]
    expected1 = [s.token for s in greedy if s.seq == 1]
    # sequence 1 runs on unaffected until its own stop (or the length limit)
    assert [s.token for s in seq1] == expected1[: len(seq1)]


def test_should_stop_callback(model):
    steps = all_steps(model, [[1, 2]], max_new_tokens=10, temperature=0) 
    assert len(steps) == 10
    gen = decode(model, [[1, 2]], SamplingParams(max_new_tokens=10, temperature=0),
                 should_stop=lambda seq, ids: len(ids) == 3)
    got = [s for g in gen for s in g]
    assert len(got) == 3 and got[-1].finish_reason == "stop"


def test_generation_slides_past_the_context(model):
    ctx = model.cfg.max_seq_len
    prompts = [[1, 2, 3], list(range(5, 5 + ctx - 2))]  # the second fills the cache almost at once
    steps = all_steps(model, prompts, max_new_tokens=2 * ctx, temperature=0)
    assert [sum(s.seq == i for s in steps) for i in (0, 1)] == [2 * ctx, 2 * ctx]
    # right after a slide, the next token is what an uncached model predicts from the kept window
    seq = prompts[1] + [s.token for s in steps if s.seq == 1]
    first_slide = len(prompts[1]) + (ctx - len(prompts[1]))  # cache full after this many tokens
    window = seq[first_slide - ctx // 2 + 1:first_slide + 1]
    want = model(torch.tensor([window])).logits[0, -1].argmax().item()
    assert seq[first_slide + 1] == want


def test_prompt_longer_than_context_and_empty_prompt_are_clear_errors(model):
    with pytest.raises(ValueError, match="longer than the model's context"):
        list(decode(model, [[1] * 65], SamplingParams(max_new_tokens=10)))
    with pytest.raises(ValueError, match="at least one token"):
        list(decode(model, [[]], SamplingParams(max_new_tokens=1)))


def test_repetition_penalty_changes_greedy_choice_away_from_seen_tokens(model):
    plain = [s.token for s in all_steps(model, [[1, 2, 3]], max_new_tokens=8, temperature=0)]
    penal = [s.token for s in all_steps(model, [[1, 2, 3]], max_new_tokens=8, temperature=0,
                                        repetition_penalty=100.0)]
    assert len(set(penal)) >= len(set(plain))
    assert len(set(penal)) == len(penal)  # a huge penalty never repeats a token
