"""Llama (``LlamaForCausalLM``) and Qwen2 (``Qwen2ForCausalLM``) in the Hugging Face format
<-> our ModelConfig and state dict.

This covers every checkpoint that uses the plain Llama wiring: Llama 1/2/3 without RoPE
scaling, SmolLM / SmolLM2, TinyLlama, and so on. Qwen2 / Qwen2.5 is the same wiring with
biases on the q, k and v projections (``qkv_bias``), so it is a second ``Flavour`` of this
file rather than a copy of it. Weight names, ours on the left (L = layer):

    backbone.tok_emb.weight                model.embed_tokens.weight                      (V, d)
    backbone.stack.blocks.L.norm1.weight   model.layers.L.input_layernorm.weight          (d,)
    backbone.stack.blocks.L.attn.qkv.weight  model.layers.L.self_attn.{q,k,v}_proj.weight  rows stacked q|k|v
    backbone.stack.blocks.L.attn.qkv.bias    model.layers.L.self_attn.{q,k,v}_proj.bias    Qwen2 only
    backbone.stack.blocks.L.attn.out.weight  model.layers.L.self_attn.o_proj.weight       (d, H*D)
    backbone.stack.blocks.L.norm2.weight   model.layers.L.post_attention_layernorm.weight (d,)
    backbone.stack.blocks.L.mlp.fc_in.weight   model.layers.L.mlp.gate_proj.weight        (d_ff, d)
    backbone.stack.blocks.L.mlp.fc_gate.weight model.layers.L.mlp.up_proj.weight          (d_ff, d)
    backbone.stack.blocks.L.mlp.fc_out.weight  model.layers.L.mlp.down_proj.weight        (d, d_ff)
    backbone.stack.norm_f.weight           model.norm.weight                              (d,)
    lm_head.weight                         lm_head.weight (untied only; tied = embed_tokens)

Both sides are ``nn.Linear`` (out, in), so nothing is transposed. Our attention projects
q, k and v with one fused matrix: its rows are HF's q_proj, k_proj and v_proj stacked in
that order (H*D, H_kv*D, H_kv*D rows). HF's MLP is down(act(gate(x)) * up(x)) and ours is
fc_out(act(fc_in(x)) * fc_gate(x)), so the activated ``gate_proj`` is our ``fc_in`` and
``up_proj`` our ``fc_gate``. Rotary positions use the same rotate-half pairing as HF, so
q_proj / k_proj need no row permutation (that is only needed for Meta's original files).
Old checkpoints store ``rotary_emb.inv_freq`` buffers; they are not weights and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

from ..config import ConfigError, ModelConfig
from .hf_gpt2 import ACTIVATIONS_FROM_HF, ACTIVATIONS_TO_HF
from .io import InteropError, StateDict, check_names_and_shapes, drop_tied_head, merged_hf_config, model_shapes, strip_prefix

MODEL_TYPE = "llama"
ARCHITECTURE = "LlamaForCausalLM"
PREFIX = "model."
EMBED = "embed_tokens.weight"
_IGNORED = re.compile(r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq")

# Values that transformers' LlamaConfig assumes for fields a config.json leaves out.
HF_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                   max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6,
                   tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None, rope_parameters=None,
                   rope_interleaved=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                   bos_token_id=1, eos_token_id=2, pad_token_id=None)

# Options our blocks do not implement: field -> the only value we can load.
_REQUIRED = {"attention_bias": False, "mlp_bias": False, "rope_interleaved": False}

# ModelConfig fields the Llama format fixes: field -> the value it must have to export.
_LLAMA_WIRING = dict(arch="decoder", position="rotary", norm="rmsnorm", norm_placement="pre", final_norm=True,
                     gated_mlp=True, bias=False)

# transformers' Qwen2Config: Llama's fields (less the bias switches, which Qwen2 fixes: q, k, v
# have biases, nothing else does) plus sliding-window attention, which we do not implement.
QWEN2_DEFAULTS = {**{k: v for k, v in HF_DEFAULTS.items() if k not in ("attention_bias", "mlp_bias", "rope_interleaved")},
                  "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
                  "max_position_embeddings": 32768, "bos_token_id": None, "eos_token_id": None,
                  "use_sliding_window": False}


@dataclass(frozen=True)
class Flavour:
    """One model_type with the Llama wiring: its names, the defaults its config class assumes,
    the options it must not use, and whether q, k and v carry biases."""
    title: str  # as messages name it
    model_type: str
    architecture: str
    defaults: Mapping
    required: Mapping
    qkv_bias: bool


LLAMA = Flavour("Llama", MODEL_TYPE, ARCHITECTURE, HF_DEFAULTS, _REQUIRED, qkv_bias=False)
QWEN2 = Flavour("Qwen2", "qwen2", "Qwen2ForCausalLM", QWEN2_DEFAULTS, {"use_sliding_window": False}, qkv_bias=True)


# ---- config ----------------------------------------------------------------------------

def config_from_hf(hf: Mapping, flavour: Flavour = LLAMA) -> ModelConfig:
    """A ModelConfig from a Llama (or Qwen2) config.json dict; what we cannot express raises ConfigError."""
    c = merged_hf_config(hf, flavour.model_type, flavour.defaults, flavour.required, "tfamily's Llama wiring")
    n_head, d_model = c["num_attention_heads"], c["hidden_size"]
    if c.get("head_dim") is not None and d_model % n_head == 0 and c["head_dim"] != d_model // n_head:
        raise ConfigError(f"head_dim={c['head_dim']} is not supported: tfamily needs head_dim == "
                          f"hidden_size / num_attention_heads = {d_model // n_head}")
    act = c["hidden_act"]
    if act not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"hidden_act={act!r} is not supported; known: {', '.join(sorted(ACTIVATIONS_FROM_HF))}")
    vocab = c["vocab_size"]
    pad = c["pad_token_id"] if isinstance(c["pad_token_id"], int) and 0 <= c["pad_token_id"] < vocab else None
    return ModelConfig(
        arch="decoder", vocab_size=vocab, d_model=d_model, n_layer=c["num_hidden_layers"], n_head=n_head,
        n_kv_head=c["num_key_value_heads"], d_ff=c["intermediate_size"], max_seq_len=c["max_position_embeddings"],
        position="rotary", rope_theta=_rope_theta(c), norm="rmsnorm", norm_eps=float(c["rms_norm_eps"]),
        norm_placement="pre", final_norm=True, activation=ACTIVATIONS_FROM_HF[act], gated_mlp=True, bias=False,
        qkv_bias=flavour.qkv_bias, tie_embeddings=bool(c["tie_word_embeddings"]), dropout=float(c["attention_dropout"]),
        init_std=float(c["initializer_range"]), scale_residual_init=False, pad_token_id=pad,
        extra={"hf": {"model_type": flavour.model_type, "bos_token_id": c["bos_token_id"],
                      "eos_token_id": c["eos_token_id"], "pad_token_id": c["pad_token_id"]}},
    )


def _rope_theta(c: Mapping) -> float:
    """The rotary base from either config layout, refusing any RoPE scaling.

    transformers >= 5 writes ``rope_parameters: {"rope_type": "default", "rope_theta": ...}``;
    older versions write ``rope_theta`` and ``rope_scaling`` (null unless scaled) at the top.
    Scaled RoPE (linear, dynamic, YaRN, Llama 3.1's "llama3") changes the frequencies, which
    our rotary module does not do, so such checkpoints are refused rather than loaded wrong.
    """
    scaling = c["rope_scaling"]
    if scaling is not None and not (isinstance(scaling, Mapping) and _rope_type(scaling) == "default"):
        raise ConfigError(f"rope_scaling={scaling!r} is not supported (only null): tfamily's rotary "
                          "embedding has no frequency scaling")
    params = c["rope_parameters"]
    if params is None:
        return float(c["rope_theta"])
    if not isinstance(params, Mapping):
        raise ConfigError(f"rope_parameters must be an object, got {params!r}")
    if _rope_type(params) != "default":
        raise ConfigError(f"rope_parameters.rope_type={_rope_type(params)!r} is not supported (only 'default'): "
                          "tfamily's rotary embedding has no frequency scaling")
    return float(params.get("rope_theta", c["rope_theta"]))


def _rope_type(params: Mapping) -> str:
    return params.get("rope_type", params.get("type", "default"))


def config_to_hf(cfg: ModelConfig, flavour: Flavour = LLAMA) -> dict:
    """A Llama (or Qwen2) config.json dict; ConfigError names the first field the format cannot express.

    The rotary base is written both ways (``rope_theta`` and ``rope_parameters``) so that
    transformers 4 and 5 read the same model.
    """
    for name, value in {**_LLAMA_WIRING, "qkv_bias": flavour.qkv_bias}.items():
        if getattr(cfg, name) != value:
            raise ConfigError(f"the {flavour.title} format needs {name}={value!r}; "
                              f"this model has {getattr(cfg, name)!r}")
    if cfg.activation not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"the Llama format has no activation {cfg.activation!r}")
    hf_extra = cfg.extra.get("hf", {}) if isinstance(cfg.extra.get("hf"), dict) else {}
    options = ({"use_sliding_window": False} if flavour.qkv_bias else
               {"attention_bias": False, "mlp_bias": False})  # Qwen2 fixes its biases; Llama has switches
    return {
        "model_type": flavour.model_type, "architectures": [flavour.architecture], **options,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
        "hidden_act": ACTIVATIONS_TO_HF[cfg.activation], "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_dropout": cfg.dropout,
        "use_cache": True,
        "bos_token_id": hf_extra.get("bos_token_id"), "eos_token_id": hf_extra.get("eos_token_id"),
        "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else hf_extra.get("pad_token_id"),
    }


# ---- weights ---------------------------------------------------------------------------

def name_groups(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(our name, HF names without prefix, rows of each) for every tensor of our state dict.

    Our tensor is the HF tensors stacked along dim 0 (rows): one HF tensor for most, q|k|v
    for the fused projection. A tied LM head maps to ``embed_tokens.weight``.
    """
    d, q_rows, kv_rows = cfg.d_model, cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    yield "backbone.tok_emb.weight", (EMBED,), (cfg.vocab_size,)
    for i in range(cfg.n_layer):
        ours, hf = f"backbone.stack.blocks.{i}.", f"layers.{i}."
        yield f"{ours}norm1.weight", (f"{hf}input_layernorm.weight",), (d,)
        yield (f"{ours}attn.qkv.weight", tuple(f"{hf}self_attn.{p}_proj.weight" for p in "qkv"),
               (q_rows, kv_rows, kv_rows))
        if cfg.qkv_bias:
            yield (f"{ours}attn.qkv.bias", tuple(f"{hf}self_attn.{p}_proj.bias" for p in "qkv"),
                   (q_rows, kv_rows, kv_rows))
        yield f"{ours}attn.out.weight", (f"{hf}self_attn.o_proj.weight",), (d,)
        yield f"{ours}norm2.weight", (f"{hf}post_attention_layernorm.weight",), (d,)
        yield f"{ours}mlp.fc_in.weight", (f"{hf}mlp.gate_proj.weight",), (cfg.d_ff,)  # activated
        yield f"{ours}mlp.fc_gate.weight", (f"{hf}mlp.up_proj.weight",), (cfg.d_ff,)
        yield f"{ours}mlp.fc_out.weight", (f"{hf}mlp.down_proj.weight",), (d,)
    yield "backbone.stack.norm_f.weight", ("norm.weight",), (d,)
    yield "lm_head.weight", ((EMBED if cfg.tie_embeddings else "lm_head.weight"),), (cfg.vocab_size,)


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """Our state dict (every key ``CausalLM.state_dict()`` has) from a Llama one.

    Names and shapes are checked first, and every problem is reported in one error.
    """
    hf = strip_prefix(sd, PREFIX, _IGNORED)
    if cfg.tie_embeddings:
        drop_tied_head(hf, EMBED)
    groups = list(name_groups(cfg))
    check_names_and_shapes(hf, _hf_shapes(cfg, groups), "Llama weights do not match config.json")
    return {ours: torch.cat([hf[n] for n in names], dim=0).contiguous() for ours, names, _ in groups}


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """A Llama state dict as ``LlamaForCausalLM`` saves it: ``model.`` prefix, fused q|k|v
    split back into three, and a tied head written once (as ``embed_tokens``)."""
    check_names_and_shapes(sd, _our_shapes(cfg, list(name_groups(cfg))), "model state dict does not match its config")
    out: StateDict = {}
    for ours, names, rows in name_groups(cfg):
        if ours == "lm_head.weight" and cfg.tie_embeddings:
            continue
        for name, part in zip(names, sd[ours].split(list(rows), dim=0)):
            key = name if name == "lm_head.weight" else PREFIX + name
            out[key] = part.detach().contiguous()
    return out


def _hf_shapes(cfg: ModelConfig, groups: list) -> dict[str, tuple]:
    """HF name -> shape: our tensor's shape with its rows split as the group says."""
    ours = _our_shapes(cfg, groups)
    return {name: (n_rows, *ours[our_name][1:])
            for our_name, names, rows in groups for name, n_rows in zip(names, rows)}


def _our_shapes(cfg: ModelConfig, groups: list) -> dict[str, tuple]:
    """Shapes of our state dict, read off a model built on the meta device (no memory), checked
    against the mapping (names and row splits) so that the two cannot drift apart silently."""
    shapes = model_shapes(cfg)
    mapped = {ours: sum(rows) for ours, _, rows in groups}
    if set(mapped) != set(shapes) or any(shapes[k][0] != r for k, r in mapped.items()):  # a bug here, not in the file
        raise InteropError(f"Llama mapping and model disagree: unmapped {sorted(set(shapes) - set(mapped))}, "
                           f"unknown {sorted(set(mapped) - set(shapes))}")
    return shapes
