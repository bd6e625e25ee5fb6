"""Beam search: beam 1 is greedy, a wide beam is exhaustive search, scores are what they say."""

import itertools
import math

import pytest
import torch
from torch import nn

from tfamily.generation import SamplingParams, beam_search, decode
from tfamily.models import build_model
from tfamily.presets import get_preset
from tfamily.models.family import family_of

EOS = 2


def model_of(arch, vocab=12):
    torch.manual_seed(0)
    name = "transformer-tiny" if arch == "encoder-decoder" else "gpt-tiny"
    extra = {"decoder_start_token_id": 1} if arch == "encoder-decoder" else {}
    cfg = get_preset(name).config(vocab_size=vocab, d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=32, **extra)
    return build_model(cfg).eval()


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_beam_one_equals_greedy(arch):
    model = model_of(arch, vocab=30)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    greedy = {}
    for steps in decode(model, prompts, SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=(EOS,))):
        for s in steps:
            greedy.setdefault(s.seq, []).append(s)
    beams = beam_search(model, prompts, beam_size=1, max_new_tokens=10, stop_token_ids=(EOS,))
    for i, (hyp,) in enumerate(beams):
        want = [s.token for s in greedy[i]]
        got = hyp.tokens + ([EOS] if hyp.finished else [])
        assert got == want
        assert [s.prob for s in hyp.steps] == pytest.approx([s.prob for s in greedy[i]], abs=1e-6)
        assert hyp.logprob == pytest.approx(sum(math.log(s.prob) for s in greedy[i]), abs=1e-5)


def _sequence_logprob(model, prompt, tokens):
    """log P(tokens | prompt) by plain teacher forcing, no cache."""
    if family_of(model.cfg).prompt == "source":  # an encoder-decoder: the prompt is the source
        tgt = torch.tensor([[model.cfg.decoder_start_token_id] + tokens[:-1]])
        logits = model(torch.tensor([prompt]), tgt).logits[0]
    else:
        ids = torch.tensor([prompt + tokens[:-1]])
        logits = model(ids).logits[0, len(prompt) - 1:]
    return logits.log_softmax(-1)[torch.arange(len(tokens)), torch.tensor(tokens)].sum().item()


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_wide_beam_finds_the_exhaustive_best(arch):
    """With 4 tokens and at most 3 steps, a beam as wide as every prefix is exhaustive search:
    it must return the finished sequence with the best length-normalised score."""
    vocab, steps = 4, 3
    model = model_of(arch, vocab=vocab)
    prompt = [3, 1, 3]
    candidates = []
    for length in range(1, steps + 1):
        for body in itertools.product([t for t in range(vocab) if t != EOS], repeat=length - 1):
            seq = list(body) + [EOS]
            candidates.append((_sequence_logprob(model, prompt, seq) / len(seq), seq))
    best_score, best_seq = max(candidates)
    (hyp,) = beam_search(model, [prompt], beam_size=vocab ** steps, max_new_tokens=steps, stop_token_ids=(EOS,),
                         early_stopping=False)[0]
    assert hyp.finished and hyp.tokens + [EOS] == best_seq
    assert hyp.score == pytest.approx(best_score, abs=1e-5)


def test_n_best_are_sorted_and_distinct():
    model = model_of("encoder-decoder", vocab=20)
    hyps = beam_search(model, [[4, 5, 6]], beam_size=5, max_new_tokens=6, stop_token_ids=(EOS,), n_best=5)[0]
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


class EosBias(nn.Module):
    """A model whose end token gets ``bias`` added to its logit, so hypotheses of every
    length finish and the length penalty has something to choose between."""

    def __init__(self, model, bias):
        super().__init__()
        self.model, self.cfg, self.bias = model, model.cfg, bias

    def make_cache(self, *args, **kwargs):
        return self.model.make_cache(*args, **kwargs)

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        out.logits[..., EOS] += self.bias
        return out


def test_length_penalty_prefers_longer_outputs():
    model = EosBias(model_of("decoder", vocab=20), bias=2.5)
    best = {lp: beam_search(model, [[4, 5, 6]], beam_size=4, max_new_tokens=8, stop_token_ids=(EOS,),
                            length_penalty=lp, early_stopping=False)[0][0] for lp in (0.0, 3.0)}
    assert best[0.0].finished and best[3.0].finished
    assert len(best[3.0].tokens) > len(best[0.0].tokens)


def test_bad_arguments_are_named():
    model = model_of("decoder")
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, [[1]], beam_size=0, stop_token_ids=(EOS,))
    with pytest.raises(ValueError, match="end token"):
        beam_search(model, [[1]], beam_size=2)
