"""GPT-2 in the Hugging Face format <-> our ModelConfig and state dict.

Weight names, ours on the left (L = layer index):

    backbone.tok_emb.weight                 wte.weight                     (V, d)
    backbone.pos_emb.weight                 wpe.weight                     (n_positions, d)
    backbone.stack.blocks.L.norm1.*         h.L.ln_1.*
    backbone.stack.blocks.L.attn.qkv.*      h.L.attn.c_attn.*              Conv1D: (d, 3d), q|k|v
    backbone.stack.blocks.L.attn.out.*      h.L.attn.c_proj.*              Conv1D: (d, d)
    backbone.stack.blocks.L.norm2.*         h.L.ln_2.*
    backbone.stack.blocks.L.mlp.fc_in.*     h.L.mlp.c_fc.*                 Conv1D: (d, d_ff)
    backbone.stack.blocks.L.mlp.fc_out.*    h.L.mlp.c_proj.*               Conv1D: (d_ff, d)
    backbone.stack.norm_f.*                 ln_f.*
    lm_head.weight                          lm_head.weight (untied only; tied = wte.weight)

HF's ``Conv1D`` stores its weight as (in, out), ``nn.Linear`` as (out, in), so the four
projection matrices are transposed; biases, norms and tables are copied as is. Both
layouts put q, k, v side by side in that order on the output axis, so the fused
``qkv`` needs no reordering. Checkpoints saved from ``GPT2LMHeadModel`` prefix the
backbone names with ``transformer.``; those saved from ``GPT2Model`` (as the original
OpenAI conversions are) do not: both are accepted. Old checkpoints also carry the causal
mask as ``h.L.attn.bias`` / ``h.L.attn.masked_bias`` buffers, which are not weights and
are skipped.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterator, Mapping

import torch

from ..config import ConfigError, ModelConfig
from .io import InteropError, StateDict, check_names_and_shapes, drop_tied_head, merged_hf_config, model_shapes, strip_prefix

MODEL_TYPE = "gpt2"
PREFIX = "transformer."
_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")

# HF activation name -> ours. gelu_new and gelu_pytorch_tanh are the same tanh approximation.
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                       "relu": "relu", "silu": "silu", "swish": "silu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}

# Values that transformers' GPT2Config assumes for fields a config.json leaves out.
HF_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                   activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                   layer_norm_epsilon=1e-5, initializer_range=0.02, scale_attn_weights=True,
                   scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                   add_cross_attention=False, tie_word_embeddings=True,
                   bos_token_id=50256, eos_token_id=50256, pad_token_id=None)

# Options our blocks do not implement: field -> the only value we can load.
_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
             "reorder_and_upcast_attn": False, "add_cross_attention": False}

# ModelConfig fields the GPT-2 format fixes: field -> the value it must have to export.
_GPT2_WIRING = dict(arch="decoder", position="learned", norm="layernorm", norm_placement="pre",
                    final_norm=True, gated_mlp=False, bias=True)


# ---- config ----------------------------------------------------------------------------

def config_from_hf(hf: Mapping) -> ModelConfig:
    """A ModelConfig from a GPT-2 config.json dict; unsupported options raise ConfigError."""
    c = merged_hf_config(hf, MODEL_TYPE, HF_DEFAULTS, _REQUIRED, "tfamily's attention")
    act = c["activation_function"]
    if act not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"activation_function={act!r} is not supported; "
                          f"known: {', '.join(sorted(ACTIVATIONS_FROM_HF))}")
    vocab = c["vocab_size"]
    pad = c["pad_token_id"] if isinstance(c["pad_token_id"], int) and 0 <= c["pad_token_id"] < vocab else None
    return ModelConfig(
        arch="decoder", vocab_size=vocab, d_model=c["n_embd"], n_layer=c["n_layer"], n_head=c["n_head"],
        d_ff=c["n_inner"], max_seq_len=c["n_positions"], position="learned", norm="layernorm",
        norm_eps=float(c["layer_norm_epsilon"]), norm_placement="pre", final_norm=True,
        activation=ACTIVATIONS_FROM_HF[act], gated_mlp=False, bias=True,
        tie_embeddings=bool(c["tie_word_embeddings"]), dropout=_one_dropout(c),
        init_std=float(c["initializer_range"]), scale_residual_init=True, pad_token_id=pad,
        extra={"hf": {"model_type": MODEL_TYPE, "bos_token_id": c["bos_token_id"],
                      "eos_token_id": c["eos_token_id"], "pad_token_id": c["pad_token_id"]}},
    )


def _one_dropout(c: Mapping) -> float:
    """We have one dropout rate; HF has three. Use the residual one and say if they differ."""
    rates = {k: float(c[k]) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    if len(set(rates.values())) > 1:
        warnings.warn(f"GPT-2 config has different dropout rates {rates}; tfamily uses one rate, "
                      f"resid_pdrop={rates['resid_pdrop']} (dropout only matters for training)")
    return rates["resid_pdrop"]


def config_to_hf(cfg: ModelConfig) -> dict:
    """A GPT-2 config.json dict; ConfigError names the first field GPT-2 cannot express."""
    for name, value in _GPT2_WIRING.items():
        if getattr(cfg, name) != value:
            raise ConfigError(f"the GPT-2 format needs {name}={value!r}; this model has {getattr(cfg, name)!r}")
    if cfg.n_kv_head != cfg.n_head:
        raise ConfigError(f"the GPT-2 format needs n_kv_head == n_head ({cfg.n_head}); got {cfg.n_kv_head}")
    if cfg.activation not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"the GPT-2 format has no activation {cfg.activation!r}")
    hf_extra = cfg.extra.get("hf", {}) if isinstance(cfg.extra.get("hf"), dict) else {}
    return {
        "model_type": MODEL_TYPE, "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size, "n_positions": cfg.max_seq_len, "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.d_ff,
        "activation_function": ACTIVATIONS_TO_HF[cfg.activation], "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "initializer_range": cfg.init_std, "tie_word_embeddings": cfg.tie_embeddings,
        **{name: value for name, value in _REQUIRED.items()},
        "use_cache": True,
        "bos_token_id": hf_extra.get("bos_token_id"), "eos_token_id": hf_extra.get("eos_token_id"),
        "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else hf_extra.get("pad_token_id"),
    }


# ---- weights ---------------------------------------------------------------------------

def name_pairs(cfg: ModelConfig) -> Iterator[tuple[str, str, bool]]:
    """(our name, HF name without prefix, transpose?) for every tensor of our state dict.

    A tied LM head maps to ``wte.weight``, so the same HF tensor appears twice.
    """
    yield "backbone.tok_emb.weight", "wte.weight", False
    yield "backbone.pos_emb.weight", "wpe.weight", False
    for i in range(cfg.n_layer):
        ours, hf = f"backbone.stack.blocks.{i}.", f"h.{i}."
        for our_mod, hf_mod, is_conv in (("norm1", "ln_1", False), ("attn.qkv", "attn.c_attn", True),
                                         ("attn.out", "attn.c_proj", True), ("norm2", "ln_2", False),
                                         ("mlp.fc_in", "mlp.c_fc", True), ("mlp.fc_out", "mlp.c_proj", True)):
            yield f"{ours}{our_mod}.weight", f"{hf}{hf_mod}.weight", is_conv
            yield f"{ours}{our_mod}.bias", f"{hf}{hf_mod}.bias", False
    yield "backbone.stack.norm_f.weight", "ln_f.weight", False
    yield "backbone.stack.norm_f.bias", "ln_f.bias", False
    yield "lm_head.weight", ("wte.weight" if cfg.tie_embeddings else "lm_head.weight"), False


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """Our state dict (every key ``CausalLM.state_dict()`` has) from a GPT-2 one.

    Names and shapes are checked first, and every problem is reported in one error.
    """
    hf = strip_prefix(sd, PREFIX, _IGNORED)
    if cfg.tie_embeddings:
        drop_tied_head(hf, "wte.weight")
    pairs = list(name_pairs(cfg))
    shapes = _our_shapes(cfg)
    expected = {hf_name: _hf_shape(shapes[ours], transpose) for ours, hf_name, transpose in pairs}
    check_names_and_shapes(hf, expected, "GPT-2 weights do not match config.json")
    return {ours: (hf[name].t() if transpose else hf[name]).contiguous() for ours, name, transpose in pairs}


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """A GPT-2 state dict as ``GPT2LMHeadModel`` saves it: ``transformer.`` prefix, and a
    tied LM head written once (as ``wte``), so the file holds each tensor once."""
    check_names_and_shapes(sd, _our_shapes(cfg), "model state dict does not match its config")
    out: StateDict = {}
    for ours, hf_name, transpose in name_pairs(cfg):
        if ours == "lm_head.weight" and cfg.tie_embeddings:
            continue
        key = hf_name if hf_name == "lm_head.weight" else PREFIX + hf_name
        out[key] = (sd[ours].t() if transpose else sd[ours]).detach().contiguous()
    return out


def _our_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Shapes of our state dict, read off a model built on the meta device (no memory),
    checked against the mapping so that the two cannot drift apart silently."""
    shapes = model_shapes(cfg)
    mapped = {ours for ours, _, _ in name_pairs(cfg)}
    if mapped != set(shapes):  # a bug in this file, not in the checkpoint
        raise InteropError(f"GPT-2 mapping and model disagree: unmapped {sorted(set(shapes) - mapped)}, "
                           f"unknown {sorted(mapped - set(shapes))}")
    return shapes


def _hf_shape(ours: tuple, transpose: bool) -> tuple:
    return tuple(reversed(ours)) if transpose else ours
