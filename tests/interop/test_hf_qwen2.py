"""Qwen2 import/export against `transformers`: the Llama wiring with biases on q, k and v."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from tfamily.config import ConfigError, ModelConfig  # noqa: E402
from tfamily.interop import export_hf, hf_llama, import_hf  # noqa: E402
from tfamily.models import build_model  # noqa: E402
from hf_helpers import assert_same_logits, hf_save, random_ids, randomize_weights  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100, max_position_embeddings=64, rope_theta=1e6, tie_word_embeddings=False,
            rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None)


def make_hf(seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    """A tiny Qwen2 with random weights and biases, so that a bias left out or put on the wrong
    projection changes the logits."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**{**TINY, **overrides})).eval()
    randomize_weights(model)
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_qwen2")
    model = make_hf()
    hf_save(model, folder)
    return model, folder


def test_import_gives_hf_logits(hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    cfg = ours.cfg
    assert (cfg.bias, cfg.qkv_bias, cfg.n_kv_head, cfg.rope_theta) == (False, True, 2, 1e6)
    assert ours.backbone.stack.blocks[0].attn.qkv.bias is not None
    assert ours.backbone.stack.blocks[0].attn.out.bias is None  # Qwen2's o_proj has none
    assert ours.backbone.stack.blocks[0].mlp.fc_in.bias is None
    assert_same_logits(ours, hf, random_ids())


def test_cached_decoding_matches_hf_full_pass(hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    ids = random_ids(b=2, t=10)
    cache = ours.make_cache(2, 10)
    with torch.no_grad():
        steps = [ours(ids[:, i:i + 1], cache=cache).logits for i in range(10)]
        want = hf(ids).logits
    torch.testing.assert_close(torch.cat(steps, 1), want, atol=1e-5, rtol=0)


def test_export_loads_in_transformers(tmp_path, hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    export_hf(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("qwen2", ["Qwen2ForCausalLM"])
    assert set(load_file(tmp_path / "model.safetensors")) == set(load_file(folder / "model.safetensors"))
    back = Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    assert_same_logits(ours, back, random_ids())


def test_config_round_trip():
    cfg = ModelConfig(vocab_size=77, d_model=48, n_layer=3, n_head=6, n_kv_head=2, d_ff=100, max_seq_len=32,
                      position="rotary", rope_theta=1e6, norm="rmsnorm", norm_eps=1e-6, gated_mlp=True,
                      activation="silu", bias=False, qkv_bias=True, tie_embeddings=True, scale_residual_init=False)
    back = hf_llama.config_from_hf(hf_llama.config_to_hf(cfg, hf_llama.QWEN2), hf_llama.QWEN2)
    assert back.replace(extra={}) == cfg.replace(extra={})


def test_export_picks_the_format_the_biases_fit(tmp_path):
    """A model with q/k/v biases is no Llama, and one without them is no Qwen2."""
    cfg = dict(vocab_size=50, d_model=32, n_layer=1, n_head=2, max_seq_len=16, position="rotary", norm="rmsnorm",
               gated_mlp=True, activation="silu", bias=False)
    with pytest.raises(ConfigError, match="the Llama format needs qkv_bias=False"):
        export_hf(build_model(ModelConfig(**cfg, qkv_bias=True)), tmp_path / "a", model_type="llama")
    with pytest.raises(ConfigError, match="the Qwen2 format needs qkv_bias=True"):
        export_hf(build_model(ModelConfig(**cfg)), tmp_path / "b", model_type="qwen2")
    export_hf(build_model(ModelConfig(**cfg, qkv_bias=True)), tmp_path / "c")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["model_type"] == "qwen2"


def test_sliding_window_is_refused(tmp_path, hf_folder):
    hf, folder = hf_folder
    (tmp_path / "config.json").write_text(json.dumps({**hf.config.to_dict(), "use_sliding_window": True}))
    with pytest.raises(ConfigError, match="use_sliding_window"):
        import_hf(tmp_path)
