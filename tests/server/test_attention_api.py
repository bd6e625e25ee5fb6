"""POST /tfamily/attention (the page's attention view): for each generated token, the attention of
the step that drew it, per layer and head, from the capture `tfamily viz attention` uses.

    the weights equal those ``capture`` records over the same prompt and output: one forward
    pass of the whole text (what `viz attention` runs) for a decoder, an encoder-decoder (cross-
    and self-attention) and a GLM (Part A + Part B); the family's decoding replayed under capture
    for Transformer-XL, whose recurrence makes the steps' keys differ from one segmented pass
    bad input gets a 400 naming the field (ids outside the vocabulary, too long, steps that are no
    generated token), an encoder a 400 naming the model
"""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from server.helpers import preset_checkpoint

from tfamily.checkpoint import load_model
from tfamily.generation import prompts as family_prompts
from tfamily.generation.states import start
from tfamily.inspect.attention import capture
from tfamily.models.family import family_of
from tfamily.nn.positions import glm_row_positions
from tfamily.server import build_app
from tfamily.tokenizers import Tokenizer

TOL = 1e-5
PROMPTS = {"gpt-tiny": "The quick brown fox", "t5-tiny": "The quick brown fox", "glm-tiny": "The quick [MASK] fox",
           "txl-tiny": "The quick brown fox jumps over the lazy dog. 0123456789"}  # XL: past one segment of 32


@pytest.fixture(scope="module", params=list(PROMPTS))
def served(request, tmp_path_factory):
    torch.set_num_threads(1)
    preset = request.param
    ck = preset_checkpoint(tmp_path_factory.mktemp(preset) / "ck", preset)
    app, engine = build_app(ck, model_name="tiny")
    model, cfg, tok_json = load_model(ck)
    try:
        with TestClient(app) as client:
            yield preset, client, model.eval(), Tokenizer.from_str(tok_json)
    finally:
        engine.close()


def _complete(client, prompt: str, n: int = 8) -> tuple[list[int], list[int]]:
    """(prompt ids, generated ids) of a sampled completion, as the page gets them."""
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": n, "seed": 4,
                                             "ignore_eos": True, "return_token_ids": True, "stream": True})
    assert r.status_code == 200, r.text
    prompt_ids, ids = None, []
    for line in r.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                prompt_ids = choice.get("prompt_token_ids", prompt_ids)
                ids += choice.get("token_ids", [])
    assert prompt_ids and len(ids) == n
    return prompt_ids, ids


def _one_pass(model, tok, prompt_ids: list[int], ids: list[int]) -> tuple[dict, int]:
    """Records of one forward pass over the whole text, as `viz attention` captures it (decoder-side
    calls only), keyed by (kind, layer), and where the decoder's stream starts in the page's tokens."""
    cfg, family = model.cfg, family_of(model.cfg)
    if family.prompt == "source":
        inputs = {"src_ids": torch.tensor([prompt_ids]), "tgt_ids": torch.tensor([[cfg.decoder_start_token_id] + ids])}
        offset = len(prompt_ids)
    elif family.prompt == "blanks":
        blank = family_prompts.encode(cfg, tok, prompt_ids).blanks[0]
        inputs = {"ids": torch.tensor([prompt_ids + [cfg.decoder_start_token_id] + ids]),
                  "positions": glm_row_positions(len(prompt_ids), [(blank, len(ids) + 1)])[None],
                  "part_a_len": torch.tensor([len(prompt_ids)])}
        offset = 0
    else:
        inputs, offset = {"ids": torch.tensor([prompt_ids + ids])}, 0
    with torch.no_grad(), capture(model) as records:
        model(**inputs)
    return {(r.kind, r.layer): r.probs[0] for r in records if r.stack != "encoder"}, offset


def _replayed(model, tok, prompt_ids: list[int], ids: list[int]) -> list[dict]:
    """Per step, {(kind, layer): (H, S)}: the family's decoding State run under capture."""
    prompt = family_prompts.encode(model.cfg, tok, prompt_ids)
    out = []
    with torch.no_grad(), capture(model, last_query=True) as records:
        state = start(model, [prompt], len(ids))
        for k in range(len(ids)):
            out.append({(r.kind, r.layer): r.probs[0, :, -1] for r in records})  # the pass's last call per module
            records.clear()
            if k + 1 < len(ids):
                state.append(torch.tensor([ids[k]]))
    return out


def test_weights_are_those_capture_records(served):
    preset, client, model, tok = served
    prompt_ids, ids = _complete(client, PROMPTS[preset])
    r = client.post("/tfamily/attention", json={"model": "tiny", "prompt": prompt_ids, "completion_ids": ids})
    assert r.status_code == 200, r.text
    got = r.json()
    family = family_of(model.cfg)
    assert got["family"] == family.name and got["layers"] == model.cfg.n_layer and got["heads"] == model.cfg.n_head
    lead = 1 if family.prompt in ("source", "blanks") else 0  # <s> / [S]: the decoder's own start
    assert [t["id"] for t in got["tokens"]] == prompt_ids + [model.cfg.decoder_start_token_id] * lead + ids
    assert [t["part"] for t in got["tokens"]] == (["prompt"] * len(prompt_ids) + ["start"] * lead
                                                  + ["completion"] * len(ids))
    assert [s["index"] for s in got["steps"]] == list(range(len(ids)))
    kinds = {"source": ["cross", "self"]}.get(family.prompt, ["self"])

    if family.windows_past_context and family.prompt == "continue":  # Transformer-XL: the replayed recurrence
        replay = _replayed(model, tok, prompt_ids, ids)
        for step in got["steps"]:
            (m,) = step["attention"]
            want = torch.stack([replay[step["index"]][("self", layer)] for layer in range(model.cfg.n_layer)])
            torch.testing.assert_close(torch.tensor(m["weights"]), want, atol=TOL, rtol=0)
            assert m["keys"][1] == step["query"] + 1
        first, last = got["steps"][0]["attention"][0]["keys"], got["steps"][-1]["attention"][0]["keys"]
        assert first == [0, len(prompt_ids)] and last[1] - last[0] > model.cfg.max_seq_len  # memory + segment
        return

    one_pass, offset = _one_pass(model, tok, prompt_ids, ids[:-1])
    for step in got["steps"]:
        k, query = step["index"], step["query"]
        assert step["token"] == len(prompt_ids) + lead + k and query == step["token"] - 1
        assert [m["kind"] for m in step["attention"]] == kinds
        for m in step["attention"]:
            start_key, end_key = m["keys"]
            weights = torch.tensor(m["weights"])  # (L, H, S)
            assert weights.shape == (model.cfg.n_layer, model.cfg.n_head, end_key - start_key)
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]), atol=TOL, rtol=0)
            row = query - offset  # the query's row in the one pass
            if m["kind"] == "cross":
                assert [start_key, end_key] == [0, len(prompt_ids)]  # the whole source
                cols = slice(0, len(prompt_ids))
            else:
                assert end_key == query + 1 and start_key == offset  # every earlier token of its own stream
                cols = slice(0, end_key - offset)
            want = torch.stack([one_pass[(m["kind"], layer)][:, row, cols] for layer in range(model.cfg.n_layer)])
            torch.testing.assert_close(weights, want, atol=TOL, rtol=0)
    # a few steps only: the same numbers, decoding stopped after the last one asked for
    r = client.post("/tfamily/attention", json={"model": "tiny", "prompt": PROMPTS[preset] if family.prompt != "blanks"
                                                else prompt_ids, "completion_ids": ids, "steps": [5, 2]})
    assert r.status_code == 200, r.text
    some = r.json()["steps"]
    assert [s["index"] for s in some] == [2, 5]
    for s in some:
        assert s["attention"] == got["steps"][s["index"]]["attention"]


def test_the_openapi_document_describes_it(http):
    doc = http.get("/openapi.json").json()
    body = doc["paths"]["/tfamily/attention"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"model", "prompt", "completion_ids"}
    ids = schema["properties"]["completion_ids"]
    vocab = http.post("/tfamily/distribution", json={"model": "tiny", "token_ids": [1]}).json()["vocab_size"]
    assert ids["items"]["maximum"] == vocab - 1 and ids["maxItems"] == 63  # context 64


BAD = [
    ({"completion_ids": [10_000]}, "completion_ids", "outside the vocabulary"),
    ({"completion_ids": [-1]}, "completion_ids", "outside the vocabulary"),
    ({"prompt": [3, 10_000]}, "prompt", "outside the vocabulary"),
    ({"completion_ids": [5] * 200}, "completion_ids", "do not fit"),
    ({"prompt": "x" * 300}, "prompt", "context"),
    ({"completion_ids": []}, "completion_ids", "at least 1"),
    ({"completion_ids": [5, 6], "steps": [2]}, "steps", "not a generated token"),
    ({"steps": [-1]}, "steps.0", "greater than or equal to 0"),
    ({"completion_ids": "abc"}, "completion_ids", "list"),
    ({"model": "other"}, "model", "does not exist"),
]


@pytest.mark.parametrize("change, param, words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(http, change, param, words):
    body = {"model": "tiny", "prompt": "The quick brown fox", "completion_ids": [5, 6, 7], **change}
    r = http.post("/tfamily/attention", json=body)
    assert r.status_code == (404 if param == "model" else 400), r.text
    err = r.json()["error"]
    assert err["param"] == param and param.split(".")[0] in err["message"] and words in err["message"]


def test_every_family_refuses_an_output_past_its_room(served):
    """The room after the prompt is the family's (its decoding State's), as for completions."""
    preset, client, _, _ = served
    r = client.post("/tfamily/attention", json={"model": "tiny", "prompt": PROMPTS[preset],
                                                "completion_ids": [5] * 100})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "completion_ids" and err["code"] == "context_length_exceeded"
    assert "do not fit" in err["message"]


@pytest.mark.parametrize("preset, words", [("bert-tiny", "does not generate"), ("lstm-tiny", "no attention")])
def test_a_model_without_generation_steps_or_attention_is_a_400_naming_the_model(tmp_path, preset, words):
    ck = preset_checkpoint(tmp_path / "ck", preset)
    app, engine = build_app(ck, model_name="m")
    try:
        with TestClient(app) as client:
            r = client.post("/tfamily/attention", json={"model": "m", "prompt": "hi", "completion_ids": [3]})
            assert r.status_code == 400 and r.json()["error"]["param"] == "model"
            assert words in r.json()["error"]["message"]
    finally:
        engine.close()
