"""Attention capture: the probabilities recorded are those the model ran with, for every family.

For every attention call, the captured probabilities times the captured values, through the
module's output projection, must give the module's own output; the model's output under capture
must equal its output without (SDPA); and outside a capture SDPA runs as before."""

from __future__ import annotations

import pytest
import torch
from server.helpers import family_config, family_tokenizer

import tfamily.nn.attention as attention_module
from tfamily.inspect.attention import attention_view, capture, model_inputs, place, streams_of
from tfamily.models import build_model
from tfamily.nn import Attention
from tfamily.presets import get_preset, tiny_version

PRESETS = ["gpt-tiny", "gpt1-tiny", "llama-tiny", "bert-tiny", "t5-tiny", "bart-tiny", "transformer-tiny",
           "glm-tiny", "txl-tiny"]
TEXTS = {"glm-tiny": "The quick [MASK] fox jumps over the [MASK] dog.",
         "txl-tiny": "The quick brown fox jumps over the lazy dog. 0123456789"}  # 2 segments of 32


def tiny(preset: str):
    cfg = tiny_version(get_preset(preset).config())
    tok = family_tokenizer(cfg)
    cfg = family_config(cfg, tok)
    torch.manual_seed(0)
    return build_model(cfg).eval(), tok


def outputs(model):
    """Each Attention module's outputs, in call order, while the returned hooks are in place."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: seen.setdefault(name, []).append(out))
               for name, m in model.named_modules() if isinstance(m, Attention)]
    return seen, handles


def logits(out):
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("preset", PRESETS)
def test_captured_probabilities_reproduce_every_attention_output(preset):
    model, tok = tiny(preset)
    inputs, _ = model_inputs(model, tok, TEXTS.get(preset, "hello there general kenobi"), max_new_tokens=3)
    modules = dict(model.named_modules())
    with torch.no_grad():
        plain = logits(model(**inputs))
        seen, handles = outputs(model)
        with capture(model, keep_values=True) as records:
            captured = logits(model(**inputs))
        for h in handles:
            h.remove()
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)  # capture does not change the model
    assert records and len(records) == sum(len(v) for v in seen.values())
    calls: dict[str, int] = {}
    for r in records:
        module = modules[r.name]
        out = seen[r.name][calls.get(r.name, 0)]
        calls[r.name] = calls.get(r.name, 0) + 1
        y = (r.probs @ r.values).transpose(1, 2).reshape(out.shape[0], out.shape[1], -1)  # (B, T, H*D)
        with torch.no_grad():
            torch.testing.assert_close(module.out(y), out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r.probs.sum(-1), torch.ones(r.probs.shape[:-1]))
        assert bool((r.probs.masked_fill(r.allowed, 0.0) == 0).all())  # nothing where the mask forbids
    for m in modules.values():
        if isinstance(m, Attention):
            assert m.probe is None and "probe" not in m.__dict__  # back on the fast path


def test_families_show_their_kinds_of_attention():
    """Cross-attention in an encoder-decoder, memory keys in Transformer-XL, Part A / B in GLM."""
    model, tok = tiny("t5-tiny")
    view = attention_view(model, tok, "hello there", target="general kenobi")
    kinds = {(m.stack, m.kind) for m in view.maps}
    assert kinds == {("encoder", "self"), ("decoder", "self"), ("decoder", "cross")}
    cross = next(m for m in view.maps if m.kind == "cross")
    encoder = next(m for m in view.maps if m.stack == "encoder")
    assert cross.keys == encoder.queries and cross.distance is None and len(cross.entropy) == cross.probs.shape[0]
    assert cross.queries[0] == "<s>" and "".join(cross.queries[1:]).replace("\u2423", " ") == "general kenobi"

    model, tok = tiny("txl-tiny")
    view = attention_view(model, tok, TEXTS["txl-tiny"])
    later = [m for m in view.maps if "segment 2 of 2" in m.title]
    assert later and all(m.key_regions[0][0] == "memory" for m in later)
    m = later[0]
    memory = m.key_regions[0][2]
    assert memory == len(m.keys) - len(m.queries) > 0
    assert m.keys[memory:] == m.queries  # after the memory, the segment's own tokens

    model, tok = tiny("glm-tiny")
    view = attention_view(model, tok, TEXTS["glm-tiny"], max_new_tokens=3)
    m = view.maps[0]
    (_, _, a), (_, b0, b1) = m.key_regions
    assert [r[0] for r in m.key_regions] == ["Part A", "Part B"] and b0 == a and b1 == len(m.keys)
    assert float(m.probs[:, :a, a:].abs().sum()) == 0.0  # Part A never sees Part B
    assert m.queries.count("[S]") >= 2  # a span per blank, each started by [S]


def test_capture_is_off_outside_the_block(monkeypatch):
    """Without a capture the fp32 path never takes the explicit formula (SDPA runs as before)."""
    model, tok = tiny("gpt-tiny")
    inputs, _ = model_inputs(model, tok, "hello there")

    def refuse(*args, **kwargs):
        raise AssertionError("explicit attention ran without a capture")

    with torch.no_grad():
        with capture(model):
            model(**inputs)
        monkeypatch.setattr(attention_module, "explicit_attention", refuse)
        model(**inputs)  # fp32 on a CPU: SDPA only


def test_place_names_queries_and_keys_of_each_stream():
    model, tok = tiny("bart-tiny")
    inputs, _ = model_inputs(model, tok, "hello there", target="general")
    with torch.no_grad(), capture(model) as records:
        model(**inputs)
    streams = streams_of(inputs, tok)
    for p in place(records, streams):
        side = "decoder" if p.record.stack == "decoder" else "encoder"
        assert p.queries == streams[side].labels
        assert p.keys == streams["encoder" if p.record.cross else side].labels
