"""The API as the official openai client sees it, and raw HTTP for what the client hides."""

import math

import httpx
import openai
import pytest
import torch

from tfamily.checkpoint import load_model
from tfamily.generation import SamplingParams, decode
from tfamily.tokenizers import Tokenizer


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def reference(checkpoint):
    model, _, tok_json = load_model(checkpoint)
    return model, Tokenizer.from_str(tok_json)


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    h = http.get("/health").json()
    assert h["status"] == "ok" and h["context"] == 64


def test_completion_matches_the_decode_generator(client, reference):
    """Text and logprobs are the model's own: the same as generation.decode on the same seed."""
    model, tok = reference
    r = client.completions.create(model="tiny", prompt="The quick", max_tokens=12, temperature=0.9, seed=7,
                                  logprobs=3)
    ids = tok.encode("The quick")
    steps = [s[0] for s in decode(model, [ids], SamplingParams(max_new_tokens=12, temperature=0.9, seed=7,
                                                                 top_alternatives=3, stop_token_ids=(tok.eos_id,)))]
    steps = [s for s in steps if s.token != tok.eos_id]
    choice = r.choices[0]
    assert choice.text == tok.decode([s.token for s in steps])
    assert choice.logprobs.tokens == [tok.token_text(s.token) for s in steps]
    for lp, s in zip(choice.logprobs.token_logprobs, steps):
        assert lp == pytest.approx(math.log(s.prob), abs=1e-4)
    top = choice.logprobs.top_logprobs[0]
    assert len(top) <= 3 and max(top.values()) == pytest.approx(math.log(steps[0].alternatives[0][1]), abs=1e-4)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens >= len(steps)


def test_seed_reproduces_and_n_gives_distinct_choices(client):
    a = client.completions.create(model="tiny", prompt="hello", max_tokens=10, seed=3, n=3)
    b = client.completions.create(model="tiny", prompt="hello", max_tokens=10, seed=3, n=3)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1


def test_stop_strings_cut_the_text(client):
    full = client.completions.create(model="tiny", prompt="abc", max_tokens=20, temperature=0).choices[0].text
    stop = full[5:7]
    cut = client.completions.create(model="tiny", prompt="abc", max_tokens=20, temperature=0, stop=[stop]).choices[0]
    assert cut.text == full[:full.find(stop)] and cut.finish_reason == "stop"
    # streamed, the held-back tail never leaks the stop string
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="abc", max_tokens=20, temperature=0, stop=stop, stream=True))
    assert streamed == cut.text


def test_chat_with_system_prompt_streams_with_logprobs(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, seed=1,
                                           logprobs=True, top_logprobs=2)
    msg = whole.choices[0]
    assert msg.message.role == "assistant" and msg.finish_reason in ("stop", "length")
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in msg.logprobs.content)
    assert "".join(t.token for t in msg.logprobs.content) == msg.message.content
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, seed=1,
                                                 logprobs=True, top_logprobs=2, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.message.content
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == msg.finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_fewshot_builds_the_prompt(client, http):
    fewshot = {"instruction": "Copy.", "examples": [{"input": "ab", "output": "ab"}], "query": "cd"}
    r = client.completions.create(model="tiny", prompt=None, max_tokens=4, temperature=0,
                                  extra_body={"fewshot": fewshot})
    assert r.usage.prompt_tokens == len("Copy.\n\nInput: ab\nOutput: ab\n\nInput: cd\nOutput:")
    chat = http.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 3, "fewshot": fewshot}).json()
    assert chat["choices"][0]["message"]["role"] == "assistant"


def test_embeddings_are_unit_pooled_hidden_states(client):
    e = client.embeddings.create(model="tiny", input=["hello there", "The quick brown fox", "hello there"])
    v = [d.embedding for d in e.data]
    assert len(v) == 3 and len(v[0]) == 64  # d_model of the tiny preset
    assert all(abs(sum(x * x for x in u) - 1) < 1e-4 for u in v)
    assert v[0] == pytest.approx(v[2], abs=1e-5) and v[0] != pytest.approx(v[1], abs=1e-3)  # padding-invariant


def test_distribution_applies_the_samplers_filters(http):
    d = http.post("/tfamily/distribution", json={"model": "tiny", "token_ids": [5, 6, 7], "top_k": 4,
                                                 "top_n": 1000}).json()
    assert d["kept"] == 4 and sum(t["prob"] for t in d["tokens"]) == pytest.approx(1, abs=1e-4)
    assert sum(t["sampled_prob"] > 0 for t in d["tokens"]) == 4
    g = http.post("/tfamily/distribution", json={"model": "tiny", "token_ids": [5], "temperature": 0}).json()
    assert g["kept"] == 1 and g["tokens"][0]["sampled_prob"] == 1


def test_playground_assets_are_served(http):
    page = http.get("/")
    assert page.status_code == 200 and "/static/playground.js" in page.text
    assert http.get("/static/playground.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/static/../api.py").status_code == 404


def test_serves_int8_weights(checkpoint):
    """--weights int8: the engine's cache follows the converted model (bf16), and completions work."""
    from server.conftest import LiveServer
    with LiveServer(checkpoint, max_batch=4, weights="int8") as s:
        assert s.engine.model.make_cache(1, 1).k.dtype == torch.bfloat16
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.post("/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 5,
                                                "temperature": 0, "logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert len(choice["logprobs"]["tokens"]) == 5
