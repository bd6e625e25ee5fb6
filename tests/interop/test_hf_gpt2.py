"""GPT-2 import/export against `transformers`, on tiny models built offline with random weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from tfamily.config import ConfigError, ModelConfig  # noqa: E402
from tfamily.interop import InteropError, MissingFileError, export_hf, hf_gpt2, import_hf  # noqa: E402
from tfamily.models import build_model  # noqa: E402
from tfamily.nn import positions_from_mask  # noqa: E402
from hf_helpers import ATOL, assert_same_logits, hf_save, random_ids  # noqa: E402

TINY = dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=100, bos_token_id=None, eos_token_id=None)


def make_hf(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    """A tiny GPT-2 whose every parameter is random, norms and biases included, so that a
    mix-up of any two tensors (or a missing transpose) changes the logits."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_gpt2")
    model = make_hf()
    hf_save(model, folder)
    return model, folder


# ---- import --------------------------------------------------------------------------

def test_import_gives_hf_logits(hf_folder):
    hf, folder = hf_folder
    ours, tokenizer_json = import_hf(folder)
    assert tokenizer_json is None
    assert ours.cfg.activation == "gelu_tanh" and ours.cfg.tie_embeddings
    assert ours.lm_head.weight is ours.backbone.tok_emb.weight
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


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_other_activations(tmp_path, activation):
    hf = make_hf(seed=2, activation_function=activation)
    hf_save(hf, tmp_path)
    ours, _ = import_hf(tmp_path)
    assert ours.cfg.activation == activation
    assert_same_logits(ours, hf, random_ids())


def test_untied_head_round_trip(tmp_path):
    hf = make_hf(seed=3, tie_word_embeddings=False)
    with torch.no_grad():
        # GPT-2's own init scale: at std 1 the logits grow to O(10) and fp32 rounding alone
        # came within 0.8x of the 1e-5 parity bound (measured 7.6e-6), so a kernel change could flip it
        hf.lm_head.weight.normal_(std=0.02)
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    hf_save(hf, tmp_path / "in")
    ours, _ = import_hf(tmp_path / "in")
    assert not ours.cfg.tie_embeddings
    assert ours.lm_head.weight is not ours.backbone.tok_emb.weight
    assert_same_logits(ours, hf, random_ids())
    export_hf(ours, tmp_path / "out")
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert_same_logits(ours, back, random_ids())


def test_pytorch_bin_without_prefix_and_with_mask_buffers(tmp_path, hf_folder):
    """The original OpenAI conversions: GPT2Model names (no ``transformer.``), causal-mask
    buffers stored as ``attn.bias``, weights in a pickle read with weights_only=True."""
    hf, _ = hf_folder
    sd = {k: v.clone() for k, v in hf.transformer.state_dict().items()}
    for i in range(hf.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    ours, _ = import_hf(tmp_path)
    assert_same_logits(ours, hf, random_ids())


class NotATensor:  # pickled by reference: only a full unpickler could rebuild it
    pass


def test_pytorch_bin_with_objects_is_refused(tmp_path, hf_folder):
    hf, _ = hf_folder
    torch.save({"wte.weight": torch.zeros(2), "payload": NotATensor()}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    with pytest.raises(InteropError, match="weights_only"):
        import_hf(tmp_path)


def test_sharded_safetensors(tmp_path, hf_folder):
    hf, folder = hf_folder
    sd = load_file(folder / "model.safetensors")
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, part in shards.items():
        save_file({n: sd[n] for n in part}, tmp_path / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    ours, _ = import_hf(tmp_path)
    assert_same_logits(ours, hf, random_ids())


# ---- export --------------------------------------------------------------------------

def test_export_loads_in_transformers(tmp_path, hf_folder):
    hf, folder = hf_folder
    ours, _ = import_hf(folder)
    tokenizer_json = json.dumps({"version": "1.0", "model": {"type": "BPE"}})
    export_hf(ours, tmp_path, tokenizer_json=tokenizer_json)
    assert (tmp_path / "tokenizer.json").read_text() == tokenizer_json
    written = load_file(tmp_path / "model.safetensors")
    assert set(written) == set(load_file(folder / "model.safetensors"))  # the names HF itself writes
    assert "lm_head.weight" not in written  # tied: stored once, as wte
    back = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert_same_logits(ours, back, random_ids())
    again, tok = import_hf(tmp_path)
    assert tok == tokenizer_json
    assert_same_logits(again, back, random_ids())


def test_export_fresh_model_from_preset(tmp_path):
    from tfamily.presets import get_preset, tiny_version

    ours = build_model(tiny_version(get_preset("gpt2-small").config())).eval()
    export_hf(ours, tmp_path)
    back = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert_same_logits(ours, back, random_ids(vocab=ours.cfg.vocab_size))


def test_export_rejects_what_gpt2_cannot_express(tmp_path):
    ours = build_model(ModelConfig(vocab_size=50, d_model=32, n_layer=1, n_head=2, max_seq_len=16, norm="rmsnorm"))
    with pytest.raises(ConfigError, match="norm='layernorm'"):
        export_hf(ours, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_config_round_trip():
    cfg = ModelConfig(vocab_size=77, d_model=48, n_layer=3, n_head=6, d_ff=100, max_seq_len=32,
                      activation="relu", tie_embeddings=False, dropout=0.05, norm_eps=1e-6, pad_token_id=3)
    back = hf_gpt2.config_from_hf(hf_gpt2.config_to_hf(cfg))
    assert back.replace(extra={}) == cfg.replace(extra={})


def test_state_dict_round_trip():
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layer=2, n_head=2, max_seq_len=16)
    sd = build_model(cfg).state_dict()
    back = hf_gpt2.state_dict_from_hf(hf_gpt2.state_dict_to_hf(sd, cfg), cfg)
    assert set(back) == set(sd)
    for name in sd:
        torch.testing.assert_close(back[name], sd[name], atol=0, rtol=0)


# ---- bad folders ---------------------------------------------------------------------

def test_missing_config(tmp_path):
    with pytest.raises(MissingFileError, match="config.json"):
        import_hf(tmp_path)


def test_missing_weights_file(tmp_path, hf_folder):
    _, folder = hf_folder
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(MissingFileError, match="model.safetensors"):
        import_hf(tmp_path)


def test_wrong_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xlnet"}))
    with pytest.raises(InteropError, match="'xlnet'.*gpt2"):
        import_hf(tmp_path)


@pytest.mark.parametrize("field", ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"])
def test_unsupported_option_names_the_field(tmp_path, hf_folder, field):
    hf, folder = hf_folder
    (tmp_path / "config.json").write_text(json.dumps({**hf.config.to_dict(), field: True}))
    with pytest.raises(ConfigError, match=field):
        import_hf(tmp_path)


def test_unknown_activation_names_the_field():
    with pytest.raises(ConfigError, match="activation_function='quick_gelu'"):
        hf_gpt2.config_from_hf({"model_type": "gpt2", "activation_function": "quick_gelu"})


def test_missing_and_unexpected_weights_are_named(tmp_path, hf_folder):
    _, folder = hf_folder
    sd = load_file(folder / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.weight"]
    sd["transformer.h.0.attn.q_attn.weight"] = torch.zeros(64, 64)
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(InteropError, match=r"missing weights: h\.1\.mlp\.c_fc\.weight") as e:
        import_hf(tmp_path)
    assert "unexpected weights: h.0.attn.q_attn.weight" in str(e.value)


def test_shape_mismatch_is_named(tmp_path, hf_folder):
    hf, folder = hf_folder
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**hf.config.to_dict(), "n_positions": 32}))
    with pytest.raises(InteropError, match=r"wpe\.weight: expected \(32, 64\), found \(64, 64\)"):
        import_hf(tmp_path)
