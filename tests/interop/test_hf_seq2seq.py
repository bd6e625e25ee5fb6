"""T5 and BART import/export against `transformers`, on tiny models with random weights built offline."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration  # noqa: E402

from tfamily.config import ConfigError  # noqa: E402
from tfamily.generation import SamplingParams, decode  # noqa: E402
from tfamily.interop import export_hf, import_hf  # noqa: E402
from hf_helpers import ATOL, hf_save  # noqa: E402

MODELS = {
    "t5": lambda: T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                      num_decoder_layers=3, num_heads=4, dropout_rate=0.0)),
    "t5-v1.1": lambda: T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=12, d_ff=64, num_layers=2,
                                                           num_heads=4, feed_forward_proj="gated-gelu",
                                                           dropout_rate=0.0)),
    "bart": lambda: BartForConditionalGeneration(BartConfig(vocab_size=100, d_model=32, encoder_layers=2,
                                                            decoder_layers=2, encoder_attention_heads=4,
                                                            decoder_attention_heads=4, encoder_ffn_dim=64,
                                                            decoder_ffn_dim=64, max_position_embeddings=40,
                                                            dropout=0.0)),
}


def make_hf(kind, seed=0):
    """Random weights everywhere (norm gains, biases, T5's position buckets, BART's logits
    bias) so a mix-up of any two tensors shows."""
    torch.manual_seed(seed)
    model = MODELS[kind]().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p)) if "norm" in name and name.endswith("weight") else p.normal_(0, 0.1)
        for name, b in model.named_buffers():
            if name == "final_logits_bias":
                b.normal_(0, 0.1)
    return model


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.randint(3, 100, (2, 9), generator=g), torch.randint(3, 100, (2, 7), generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False  # right padding, as transformers' tokenizers pad
    return src, tgt, mask


@pytest.fixture(params=sorted(MODELS))
def pair(request, tmp_path):
    hf = make_hf(request.param)
    hf_save(hf, tmp_path / "hf")
    ours, _ = import_hf(tmp_path / "hf")
    return request.param, hf, ours, tmp_path


def test_import_gives_the_same_logits(pair):
    _, hf, ours, _ = pair
    src, tgt, mask = batch()
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        got = ours(src, tgt, src_mask=mask).logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_export_loads_in_transformers_with_the_same_logits(pair):
    kind, hf, ours, tmp_path = pair
    export_hf(ours, tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == kind.split("-")[0]
    again = type(hf).from_pretrained(tmp_path / "back").eval()
    src, tgt, mask = batch(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits,
                                   hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits,
                                   atol=ATOL, rtol=0)


def test_cached_greedy_decoding_matches_transformers_generate(pair):
    """Our decode generator (encoder once, KV cache, relative bias per step) picks the tokens
    transformers' greedy generate picks."""
    _, hf, ours, _ = pair
    src = batch()[0][:1]
    with torch.no_grad():
        want = hf.generate(input_ids=src, max_new_tokens=8, do_sample=False, num_beams=1, min_new_tokens=8,
                           decoder_start_token_id=ours.cfg.decoder_start_token_id, eos_token_id=None,
                           forced_eos_token_id=None, forced_bos_token_id=None,
                           use_cache=False)[0, 1:].tolist()  # theirs uncached: ours is the cached one
    got = [s.token for steps in decode(ours, src.tolist(), SamplingParams(max_new_tokens=8, temperature=0))
           for s in steps]
    assert got == want


def test_unsupported_t5_options_are_named(tmp_path):
    hf = make_hf("t5")
    hf_save(hf, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["feed_forward_proj"] = "gated-gelu-plus"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        import_hf(tmp_path / "hf")
