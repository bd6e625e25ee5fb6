"""Every generative family through one door: each preset whose family can generate (its tiny
version, random weights, a tokenizer fit to its family) is saved, served, and driven with the
official ``openai`` client; what the server returns equals what the generation functions give
on the same checkpoint with the same seed: the same tokens and text, logprobs within 1e-5.

    decoders (GPT, Llama)           completions  ==  generate
    Transformer-XL                  completions  ==  generate, past one segment (the memory)
    encoder-decoders (T5, BART,     completions  ==  generate (the prompt is the source)
    the translation Transformer)    use_beam_search, n beams  ==  translate (beam search)
    GLM                             completions with [MASK]s  ==  infill; without  ==  generate

and for each: streaming gives the same text and logprobs, concurrent requests the same output
as one at a time, and /tfamily/distribution (the page's view of one step) the same
probability the completion reported for the token drawn there.

Presets whose tiny versions are the same model (gpt2-small ... gpt2-xl, t5-small / t5-tiny, ...)
share one run: the test id lists them all.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import openai
import pytest
import torch

from server.conftest import LiveServer
from server.helpers import family_config, family_tokenizer, preset_checkpoint
from tfamily.checkpoint import load_model
from tfamily.generation import SamplingParams, decode, generate, translate
from tfamily.generation import prompts as family_prompts
from tfamily.generation.infill import infill
from tfamily.models.family import family_of
from tfamily.presets import PRESETS, tiny_version
from tfamily.tokenizers import Tokenizer

TOL = 1e-5
SEED, TEMPERATURE, ALTERNATIVES = 11, 0.8, 3


def _wiring(name: str) -> str:
    """The tiny model a preset becomes, as text (without its name)."""
    cfg = tiny_version(PRESETS[name].config())
    data = family_config(cfg, family_tokenizer(cfg)).to_dict()
    data.pop("extra", None)
    return json.dumps(data, sort_keys=True)


def _groups() -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(PRESETS):
        if family_of(PRESETS[name].config()).can("generate"):
            groups.setdefault(_wiring(name), []).append(name)
    return list(groups.values())


GROUPS = _groups()


@pytest.fixture(params=GROUPS, ids=["+".join(g) for g in GROUPS])
def served(request, tmp_path):
    torch.set_num_threads(1)
    ck = preset_checkpoint(tmp_path / "ck", request.param[0])
    model, cfg, tok_json = load_model(ck)
    with LiveServer(ck, max_batch=8) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        yield server, client, model, Tokenizer.from_str(tok_json)


def _prompt(family) -> str:
    return {"blanks": "The [MASK] brown [MASK] jumps", "source": "The quick brown fox"}.get(family.prompt,
                                                                                            "The quick brown")


def _params(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_tokens, temperature=TEMPERATURE, seed=SEED,
                          top_alternatives=ALTERNATIVES, **kw)


def _reference(model, tok, prompt: str, max_tokens: int):
    """(steps, text, finish_reason) from the generation functions: infill for a text with
    blanks, generate otherwise; the tokens that end an output are not part of it."""
    family = family_of(model.cfg)
    stops = set(family_prompts.stop_ids(model.cfg, tok))
    if family.prompt == "blanks" and "[MASK]" in prompt:
        r = infill(model, tok, prompt, _params(max_tokens))
        steps = [s for b in r.blanks for s in b.steps if s.token not in stops]
        return steps, "".join(b.text for b in r.blanks), r.blanks[-1].finish_reason
    (g,) = generate(model, tok, [prompt], _params(max_tokens))
    return [s for s in g.steps if s.token not in stops], g.text, g.finish_reason


def _same(choice, steps, text, tok) -> None:
    assert choice.text == text
    assert choice.model_extra["token_ids"] == [s.token for s in steps]
    lp = choice.logprobs
    assert lp.tokens == [tok.token_text(s.token) for s in steps]
    assert lp.token_logprobs == pytest.approx([s.logprob for s in steps], abs=TOL)
    for top, s in zip(lp.top_logprobs, steps):
        want = {tok.token_text(t): p for t, p in s.top}
        assert top.keys() == want.keys() and list(top.values()) == pytest.approx(list(want.values()), abs=TOL)


def _complete(client, prompt, max_tokens, extra=(), **kw):
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=TEMPERATURE,
                                     seed=SEED, logprobs=ALTERNATIVES, extra_body={"return_token_ids": True, **dict(extra)},
                                     **kw)


def test_the_server_gives_what_the_generation_functions_give(served):
    server, client, model, tok = served
    family = family_of(model.cfg)
    prompt, max_tokens = _prompt(family), 10
    r = _complete(client, prompt, max_tokens)
    steps, text, finish = _reference(model, tok, prompt, max_tokens)
    choice = r.choices[0]
    _same(choice, steps, text, tok)
    assert choice.finish_reason == finish
    assert r.usage.prompt_tokens == len(family_prompts.encode(model.cfg, tok, prompt))

    # streamed: the same text, tokens and logprobs, piece by piece
    chunks = list(_complete(client, prompt, max_tokens, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0] for c in chunks if c.choices]
    assert "".join(p.text for p in pieces) == choice.text
    assert [lp for p in pieces if p.logprobs for lp in p.logprobs.token_logprobs] == \
        pytest.approx(choice.logprobs.token_logprobs, abs=TOL)
    assert pieces[-1].finish_reason == finish and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    # the page's view of one step: the distribution there gives the drawn token its reported probability
    # (a GLM's first blank: the page sends no [E], so the view reads what follows as that blank's filling)
    ids = family_prompts.encode(model.cfg, tok, prompt)
    ids = getattr(ids, "ids", ids)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for k in {0, max(i for i, s in enumerate(steps) if s.part == 0)}:
            d = http.post("/tfamily/distribution", json={
                "model": "tiny", "token_ids": list(ids) + [s.token for s in steps[:k]], "prompt_length": len(ids),
                "top_n": 1000}).json()
            prob = {t["id"]: t["prob"] for t in d["tokens"]}[steps[k].token]
            assert prob == pytest.approx(steps[k].prob, abs=TOL)


def test_family_specific_ways_in(served):
    """A GLM continues a text without a blank ([gMASK]); Transformer-XL generates past its
    segment through its memory; an encoder-decoder's beam search equals ``translate``."""
    server, client, model, tok = served
    family = family_of(model.cfg)
    if family.prompt == "blanks":
        r = _complete(client, "The quick", 6)
        steps, text, _ = _reference(model, tok, "The quick", 6)
        _same(r.choices[0], steps, text, tok)
    if family.decoding == "recurrent":  # prompt + output longer than a segment: the memory carries it
        prompt, n = "The quick brown", model.cfg.max_seq_len
        r = _complete(client, prompt, n, extra={"ignore_eos": True})
        ids = family_prompts.encode(model.cfg, tok, prompt)
        steps = [s.named(tok) for g in decode(model, [ids], _params(n)) for s in g]  # no stop token: ignore_eos
        assert len(ids) + len(steps) > model.cfg.max_seq_len
        _same(r.choices[0], steps, tok.decode([s.token for s in steps]), tok)
    if family.can("translate"):
        prompt = _prompt(family)
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, n=2, logprobs=2,
                                      extra_body={"use_beam_search": True, "return_token_ids": True})
        (best,) = translate(model, tok, [prompt], beam_size=2, max_len_a=0, max_len_b=8, top_alternatives=2)
        steps = [s for s in best.steps if s.token != tok.eos_id]
        assert len(r.choices) == 2
        _same(r.choices[0], steps, best.text, tok)


def test_concurrent_requests_get_what_each_gets_alone(served):
    _, client, model, _ = served
    prompts = ["The quick", "brown fox jumps", "lazy dog. 0123"]
    if family_of(model.cfg).prompt == "blanks":
        prompts = [p + " [MASK]" for p in prompts]

    def greedy(p):
        return client.completions.create(model="tiny", prompt=p, max_tokens=6, temperature=0, logprobs=1).choices[0]
    alone = [greedy(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(greedy, prompts))
    assert [c.text for c in together] == [c.text for c in alone]
    for a, b in zip(alone, together):
        assert a.logprobs.token_logprobs == pytest.approx(b.logprobs.token_logprobs, abs=1e-4)
