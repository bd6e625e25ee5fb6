import pytest
import torch

from tfamily.generation import SamplingParams, generate
from tfamily.generation.text import cut_at_stop
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version
from tfamily.tokenizers import Tokenizer


@pytest.fixture(scope="module")
def setup():
    tok = Tokenizer.train("char", ["abcdefgh ijklmnop\nqrstuvwxyz"])
    torch.manual_seed(0)
    model = build_model(tiny_version(get_preset("gpt-tiny").config()).replace(vocab_size=tok.vocab_size)).eval()
    return model, tok


def test_text_matches_steps_and_params_are_not_mutated(setup):
    model, tok = setup
    params = SamplingParams(max_new_tokens=12, temperature=0)
    (r,) = generate(model, tok, ["abc"], params)
    assert params.stop_token_ids == ()
    ids = [s.token for s in r.steps if s.token != tok.eos_id]
    assert r.text == tok.decode(ids)
    assert r.finish_reason in ("length", "stop")


def test_stop_string_cuts_the_text(setup):
    model, tok = setup
    (free,) = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=12, temperature=0))
    stop = free.text[2:4]  # appears at index 2 at the latest
    (r,) = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=12, temperature=0), stop=[stop])
    assert r.text == free.text[: free.text.find(stop)]
    assert r.finish_reason == "stop" and len(r.steps) <= 4


def test_eos_stops_generation(setup):
    model, tok = setup
    first = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=1, temperature=0))[0].steps[0].token
    (r,) = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=[first]))
    assert len(r.steps) == 1 and r.finish_reason == "stop" and r.text == ""


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("one. two! three", [".", "!"]) == "one"
    assert cut_at_stop("no stop here", ["?"]) == "no stop here"
