"""BART (``BartForConditionalGeneration``) in the Hugging Face format <-> our encoder-decoder.

BART is our encoder-decoder with learned positions stored from row 2 of their table, a
LayerNorm on each side's embeddings, post-LN blocks with biases, GELU, and a bias on the
vocabulary logits (``final_logits_bias``, a (1, V) buffer there, ``lm_head.bias`` here).
Names (L = layer; HF's carry a ``model.`` prefix):

    tok_emb.weight                    shared.weight (= encoder/decoder.embed_tokens)
    enc_pos / dec_pos.weight          encoder/decoder.embed_positions.weight
    enc_norm / dec_norm               encoder/decoder.layernorm_embedding
    {side}.blocks.L.attn.qkv / out    {side}.layers.L.self_attn.{q,k,v}_proj / out_proj
    {side}.blocks.L.norm1             {side}.layers.L.self_attn_layer_norm
    decoder.blocks.L.cross_attn.q / kv / out, norm_cross   decoder.layers.L.encoder_attn.q_proj / k|v_proj / out_proj,
                                                           encoder_attn_layer_norm
    {side}.blocks.L.mlp.fc_in / fc_out, norm2    {side}.layers.L.fc1 / fc2, final_layer_norm
    lm_head.bias                      final_logits_bias
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import torch

from ..config import ConfigError, ModelConfig
from .hf_gpt2 import ACTIVATIONS_FROM_HF, ACTIVATIONS_TO_HF
from .io import StateDict, drop_tied_head, merged_hf_config, stacked_from_hf, stacked_to_hf, strip_prefix

MODEL_TYPE = "bart"
ARCHITECTURE = "BartForConditionalGeneration"
PREFIX = "model."
POSITION_OFFSET = 2
_IGNORED = re.compile(r"(encoder|decoder)\.embed_tokens\.weight")
HF_DEFAULTS = dict(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                   decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                   activation_function="gelu", dropout=0.1, max_position_embeddings=1024, init_std=0.02,
                   scale_embedding=False, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                   tie_word_embeddings=True, is_encoder_decoder=True, add_final_layer_norm=False,
                   normalize_before=False)
_REQUIRED = {"is_encoder_decoder": True, "add_final_layer_norm": False, "normalize_before": False}
_BART_WIRING = dict(arch="encoder-decoder", position="learned", position_offset=POSITION_OFFSET, norm="layernorm",
                    norm_placement="post", final_norm=False, embed_norm=True, bias=True, gated_mlp=False,
                    share_encoder_embeddings=True, lm_head_bias=True)


def config_from_hf(hf: Mapping) -> ModelConfig:
    c = merged_hf_config(hf, MODEL_TYPE, HF_DEFAULTS, _REQUIRED, "tfamily's BART wiring")
    for ours, theirs in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if c[ours] != c[theirs]:
            raise ConfigError(f"{ours}={c[ours]} differs from {theirs}={c[theirs]}; tfamily's stacks share one size")
    act = c["activation_function"]
    if act not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"activation_function={act!r} is not supported")
    return ModelConfig(
        arch="encoder-decoder", vocab_size=c["vocab_size"], d_model=c["d_model"], n_layer=c["decoder_layers"],
        n_encoder_layer=c["encoder_layers"], n_head=c["encoder_attention_heads"], d_ff=c["encoder_ffn_dim"],
        max_seq_len=c["max_position_embeddings"], position="learned", position_offset=POSITION_OFFSET,
        norm="layernorm", norm_eps=1e-5, norm_placement="post", final_norm=False, embed_norm=True,
        activation=ACTIVATIONS_FROM_HF[act], bias=True, tie_embeddings=bool(c["tie_word_embeddings"]),
        share_encoder_embeddings=True, scale_embeddings=bool(c["scale_embedding"]), lm_head_bias=True,
        dropout=float(c["dropout"]), init_std=float(c["init_std"]), scale_residual_init=False,
        pad_token_id=c["pad_token_id"], decoder_start_token_id=c["decoder_start_token_id"],
        extra={"hf": {"model_type": MODEL_TYPE, "bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"]}})


def config_to_hf(cfg: ModelConfig) -> dict:
    for name, value in _BART_WIRING.items():
        if getattr(cfg, name) != value:
            raise ConfigError(f"the BART format needs {name}={value!r}; this model has {getattr(cfg, name)!r}")
    if cfg.n_kv_head != cfg.n_head or cfg.attention_scale is not None or cfg.d_head is not None:
        raise ConfigError("the BART format has no grouped-query attention, custom head size or attention scale")
    if cfg.activation not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"the BART format has no activation {cfg.activation!r}")
    hf_extra = cfg.extra.get("hf", {}) if isinstance(cfg.extra.get("hf"), dict) else {}
    return {"model_type": MODEL_TYPE, "architectures": [ARCHITECTURE], "is_encoder_decoder": True,
            "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "encoder_layers": cfg.encoder_layers,
            "decoder_layers": cfg.n_layer, "encoder_attention_heads": cfg.n_head,
            "decoder_attention_heads": cfg.n_head, "encoder_ffn_dim": cfg.d_ff, "decoder_ffn_dim": cfg.d_ff,
            "activation_function": ACTIVATIONS_TO_HF[cfg.activation], "dropout": cfg.dropout,
            "attention_dropout": cfg.dropout, "activation_dropout": 0.0,
            "max_position_embeddings": cfg.max_seq_len, "init_std": cfg.init_std,
            "scale_embedding": cfg.scale_embeddings, "tie_word_embeddings": cfg.tie_embeddings,
            "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else 1,
            "bos_token_id": hf_extra.get("bos_token_id", 0), "eos_token_id": hf_extra.get("eos_token_id", 2),
            "decoder_start_token_id": cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else 2,
            "forced_eos_token_id": hf_extra.get("eos_token_id", 2)}


def name_map(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    yield "tok_emb.weight", ("shared.weight",)
    for side, short in (("encoder", "enc"), ("decoder", "dec")):
        yield f"{short}_pos.weight", (f"{side}.embed_positions.weight",)
        for p in ("weight", "bias"):
            yield f"{short}_norm.{p}", (f"{side}.layernorm_embedding.{p}",)
        n_layers = cfg.encoder_layers if side == "encoder" else cfg.n_layer
        for i in range(n_layers):
            ours, hf = f"{side}.blocks.{i}.", f"{side}.layers.{i}."
            for p in ("weight", "bias"):
                yield f"{ours}attn.qkv.{p}", tuple(f"{hf}self_attn.{n}_proj.{p}" for n in "qkv")
                yield f"{ours}attn.out.{p}", (f"{hf}self_attn.out_proj.{p}",)
                yield f"{ours}norm1.{p}", (f"{hf}self_attn_layer_norm.{p}",)
                if side == "decoder":
                    yield f"{ours}cross_attn.q.{p}", (f"{hf}encoder_attn.q_proj.{p}",)
                    yield f"{ours}cross_attn.kv.{p}", (f"{hf}encoder_attn.k_proj.{p}", f"{hf}encoder_attn.v_proj.{p}")
                    yield f"{ours}cross_attn.out.{p}", (f"{hf}encoder_attn.out_proj.{p}",)
                    yield f"{ours}norm_cross.{p}", (f"{hf}encoder_attn_layer_norm.{p}",)
                yield f"{ours}mlp.fc_in.{p}", (f"{hf}fc1.{p}",)
                yield f"{ours}mlp.fc_out.{p}", (f"{hf}fc2.{p}",)
                yield f"{ours}norm2.{p}", (f"{hf}final_layer_norm.{p}",)
    yield "lm_head.weight", ("shared.weight" if cfg.tie_embeddings else "lm_head.weight",)
    yield "lm_head.bias", ("final_logits_bias",)


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    hf = strip_prefix(sd, PREFIX, _IGNORED)
    if "final_logits_bias" in hf:  # a (1, V) buffer there, a (V,) bias here
        hf["final_logits_bias"] = hf["final_logits_bias"].reshape(-1)
    if cfg.tie_embeddings:
        drop_tied_head(hf, "shared.weight")
    return stacked_from_hf(hf, cfg, list(name_map(cfg)), "BART")


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    skip = frozenset({"lm_head.weight"} if cfg.tie_embeddings else ())
    out = stacked_to_hf(sd, cfg, list(name_map(cfg)), "BART", skip)
    renamed = {k if k in ("final_logits_bias", "lm_head.weight") else PREFIX + k: v for k, v in out.items()}
    renamed["final_logits_bias"] = renamed["final_logits_bias"].reshape(1, -1)
    return renamed
