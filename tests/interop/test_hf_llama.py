"""Llama import/export against `transformers`, on tiny models built offline with random weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tfamily.config import ConfigError, ModelConfig  # noqa: E402
from tfamily.interop import InteropError, export_hf, hf_llama, import_hf  # noqa: E402
from tfamily.models import build_model  # noqa: E402
from tfamily.nn import positions_from_mask  # noqa: E402
from hf_helpers import ATOL, assert_same_logits, hf_save, random_ids, randomize_weights  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100, max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
            bos_token_id=None, eos_token_id=None)


def make_hf(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A tiny Llama with random weights, RMSNorm gains included, so that a mix-up of any two
    tensors (gate/up, q/k, the norms) changes the logits."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides})).eval()
    randomize_weights(model)
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llama")
    model = make_hf()
    hf_save(model, folder)
    return model, folder


# ---- import --------------------------------------------------------------------------

def test_import_gives_hf_logits(hf_folder):
    hf, folder = hf_folder
    ours, tokenizer_json = import_hf(folder)
    cfg = ours.cfg
    assert tokenizer_json is None
    wiring = (cfg.position, cfg.norm, cfg.gated_mlp, cfg.bias, cfg.activation)
    assert wiring == ("rotary", "rmsnorm", True, False, "silu")
    assert (cfg.n_head, cfg.n_kv_head, cfg.d_ff, cfg.rope_theta) == (4, 2, 160, 10000.0)
    assert not cfg.tie_embeddings
    assert_same_logits(ours, hf, random_ids())


def test_import_left_padding_matches_hf_on_real_tokens(hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    ids = random_ids(b=3, t=12)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, :9] = 0
    positions = positions_from_mask(mask.bool())  # ours counts positions over real tokens
    with torch.no_grad():
        got = ours(ids, attention_mask=mask).logits
        want = hf(ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)


def test_cached_decoding_matches_hf_full_pass(hf_folder):
    """Keys enter the cache already rotated: a token-by-token pass equals HF's full pass."""
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    ids = random_ids(b=2, t=10)
    cache = ours.make_cache(2, 10)
    with torch.no_grad():
        steps = [ours(ids[:, :4], cache=cache).logits] + [ours(ids[:, i:i + 1], cache=cache).logits
                                                          for i in range(4, 10)]
        want = hf(ids).logits
    torch.testing.assert_close(torch.cat(steps, 1), want, atol=ATOL, rtol=0)


def test_tied_embeddings_round_trip(tmp_path):
    hf = make_hf(seed=3, tie_word_embeddings=True)
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    hf_save(hf, tmp_path / "in")
    ours, _ = import_hf(tmp_path / "in")
    assert ours.cfg.tie_embeddings and ours.lm_head.weight is ours.backbone.tok_emb.weight
    assert_same_logits(ours, hf, random_ids())
    export_hf(ours, tmp_path / "out")
    assert "lm_head.weight" not in load_file(tmp_path / "out" / "model.safetensors")  # stored once
    back = LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert_same_logits(ours, back, random_ids())


def test_theta_and_no_gqa(tmp_path):
    hf = make_hf(seed=4, rope_theta=100000.0, num_key_value_heads=4, hidden_act="gelu")
    hf_save(hf, tmp_path)
    ours, _ = import_hf(tmp_path)
    assert ours.cfg.rope_theta == 100000.0 and ours.cfg.n_kv_head == 4 and ours.cfg.activation == "gelu"
    assert_same_logits(ours, hf, random_ids())


def test_transformers_4_config_layout(tmp_path, hf_folder):
    """Older config.json files carry rope_theta / rope_scaling at the top, no rope_parameters."""
    hf, folder = hf_folder
    old = {k: v for k, v in hf.config.to_dict().items() if k != "rope_parameters"}
    old.update(rope_theta=500.0, rope_scaling=None)
    assert hf_llama.config_from_hf(old).rope_theta == 500.0


def test_model_prefixless_names_and_inv_freq_buffers(tmp_path, hf_folder):
    """LlamaModel files (no ``model.`` prefix) and old ``rotary_emb.inv_freq`` buffers load."""
    hf, folder = hf_folder
    sd = {k.removeprefix("model."): v.clone() for k, v in hf.state_dict().items()}
    sd["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    ours, _ = import_hf(tmp_path)
    assert_same_logits(ours, hf, random_ids())


# ---- export --------------------------------------------------------------------------

def test_export_loads_in_transformers(tmp_path, hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    export_hf(ours, tmp_path)
    written = load_file(tmp_path / "model.safetensors")
    assert set(written) == set(load_file(folder / "model.safetensors"))  # the names HF itself writes
    back = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert_same_logits(ours, back, random_ids())
    again, _ = import_hf(tmp_path)
    assert_same_logits(again, back, random_ids())


@pytest.mark.parametrize("preset", ["llama-tiny", "smollm2-135m"])
def test_export_fresh_model_from_preset(tmp_path, preset):
    from tfamily.presets import get_preset, tiny_version

    ours = build_model(tiny_version(get_preset(preset).config())).eval()
    export_hf(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    back = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert_same_logits(ours, back, random_ids(vocab=ours.cfg.vocab_size))


def test_smollm2_preset_matches_its_config_json():
    """The preset read back from SmolLM2-135M's published config.json (as shipped, transformers 4.42)."""
    from tfamily.presets import get_preset

    published = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                 "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
                 "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": True,
                 "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
                 "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
                 "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True,
                 "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 49152}
    got = hf_llama.config_from_hf(published)
    want = get_preset("smollm2-135m").config()
    fields = ("vocab_size", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "max_seq_len", "position",
              "rope_theta", "norm", "norm_eps", "activation", "gated_mlp", "bias", "tie_embeddings")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}
    assert got.init_std == pytest.approx(want.init_std)


def test_config_round_trip():
    cfg = ModelConfig(vocab_size=77, d_model=48, n_layer=3, n_head=6, n_kv_head=2, d_ff=100, max_seq_len=32,
                      position="rotary", rope_theta=5e5, norm="rmsnorm", norm_eps=1e-6, gated_mlp=True,
                      activation="silu", bias=False, tie_embeddings=False, scale_residual_init=False, pad_token_id=3)
    back = hf_llama.config_from_hf(hf_llama.config_to_hf(cfg))
    assert back.replace(extra={}) == cfg.replace(extra={})


def test_state_dict_round_trip():
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layer=2, n_head=4, n_kv_head=1, max_seq_len=16,
                      position="rotary", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False)
    sd = build_model(cfg).state_dict()
    back = hf_llama.state_dict_from_hf(hf_llama.state_dict_to_hf(sd, cfg), cfg)
    assert set(back) == set(sd)
    for name in sd:
        torch.testing.assert_close(back[name], sd[name], atol=0, rtol=0)


# ---- what we cannot express ------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("rope_scaling", {"rope_type": "linear", "factor": 2.0}),
                                          ("rope_parameters", {"rope_type": "llama3", "rope_theta": 5e5,
                                                               "factor": 8.0}),
                                          ("attention_bias", True), ("mlp_bias", True), ("head_dim", 32),
                                          ("rope_interleaved", True), ("hidden_act", "quick_gelu")])
def test_unsupported_config_names_the_field(tmp_path, hf_folder, field, value):
    hf, folder = hf_folder
    (tmp_path / "config.json").write_text(json.dumps({**hf.config.to_dict(), field: value}))
    with pytest.raises(ConfigError, match=field):
        import_hf(tmp_path)


def test_export_rejects_what_llama_cannot_express(tmp_path):
    ours = build_model(ModelConfig(vocab_size=50, d_model=32, n_layer=1, n_head=2, max_seq_len=16,
                                   position="rotary", norm="rmsnorm", gated_mlp=True, bias=True))
    with pytest.raises(ConfigError, match="llama: the Llama format needs bias=False"):
        export_hf(ours, tmp_path, model_type="llama")
    assert not (tmp_path / "model.safetensors").exists()


def test_missing_and_misshapen_weights_are_named(tmp_path, hf_folder):
    hf, folder = hf_folder
    sd = load_file(folder / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64)  # as if not grouped-query
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(InteropError, match=r"missing weights: layers\.1\.mlp\.up_proj\.weight") as e:
        import_hf(tmp_path)
    assert "layers.0.self_attn.k_proj.weight: expected (32, 64), found (64, 64)" in str(e.value)
