"""T5 (``T5ForConditionalGeneration``) in the Hugging Face format <-> our encoder-decoder.

T5 is our encoder-decoder with: RMSNorm without bias, pre-LN with a final norm per stack, no
biases anywhere, relative position buckets (one learned table per stack, in its first
block), no 1/sqrt(d) on the scores, and (when the head is tied) hidden states times
d_model^-0.5 before the shared embedding projects them to the vocabulary. Names (L = layer):

    tok_emb.weight                          shared.weight (= encoder/decoder.embed_tokens)
    enc_rel.embedding.weight                encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
    dec_rel.embedding.weight                decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
    encoder.blocks.L.attn.qkv / .out        encoder.block.L.layer.0.SelfAttention.{q,k,v} / .o
    encoder.blocks.L.norm1 / norm2          encoder.block.L.layer.0.layer_norm / layer.1.layer_norm
    encoder.blocks.L.mlp.fc_in / fc_out     encoder.block.L.layer.1.DenseReluDense.wi / .wo   (gated: wi_0 | wi_1)
    decoder.blocks.L.attn.*, norm1          decoder.block.L.layer.0.*
    decoder.blocks.L.cross_attn.q / kv / out, norm_cross   decoder.block.L.layer.1.EncDecAttention.q / k|v / o, layer_norm
    decoder.blocks.L.mlp.*, norm2           decoder.block.L.layer.2.*
    encoder.norm_f / decoder.norm_f         encoder.final_layer_norm / decoder.final_layer_norm
    lm_head.weight                          lm_head.weight (untied only)
"""

from __future__ import annotations

from typing import Iterator, Mapping

import torch

from ..config import ConfigError, ModelConfig
from .hf_gpt2 import ACTIVATIONS_FROM_HF, ACTIVATIONS_TO_HF
from .io import StateDict, drop_tied_head, merged_hf_config, stacked_from_hf, stacked_to_hf

MODEL_TYPE = "t5"
ARCHITECTURE = "T5ForConditionalGeneration"
HF_DEFAULTS = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None,
                   num_heads=8, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   dropout_rate=0.1, layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu",
                   tie_word_embeddings=True, scale_decoder_outputs=None, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0, is_encoder_decoder=True)
_REQUIRED = {"is_encoder_decoder": True}
_T5_WIRING = dict(arch="encoder-decoder", position="t5_relative", norm="rmsnorm", norm_placement="pre",
                  final_norm=True, bias=False, share_encoder_embeddings=True, scale_embeddings=False,
                  embed_norm=False, lm_head_bias=False)


def config_from_hf(hf: Mapping) -> ModelConfig:
    c = merged_hf_config(hf, MODEL_TYPE, HF_DEFAULTS, _REQUIRED, "tfamily's T5 wiring")
    parts = str(c["feed_forward_proj"]).split("-")
    gated = parts[0] == "gated" and len(parts) == 2
    act = "gelu_new" if c["feed_forward_proj"] == "gated-gelu" else parts[-1]
    if act not in ACTIVATIONS_FROM_HF or len(parts) > 2 or (len(parts) == 2 and not gated):
        raise ConfigError(f"feed_forward_proj={c['feed_forward_proj']!r} is not supported")
    tie = bool(c["tie_word_embeddings"])
    scale = c["scale_decoder_outputs"] if c["scale_decoder_outputs"] is not None else tie
    return ModelConfig(
        arch="encoder-decoder", vocab_size=c["vocab_size"], d_model=c["d_model"], d_head=c["d_kv"],
        n_layer=c["num_decoder_layers"] or c["num_layers"], n_encoder_layer=c["num_layers"], n_head=c["num_heads"],
        d_ff=c["d_ff"], max_seq_len=512, position="t5_relative", relative_buckets=c["relative_attention_num_buckets"],
        relative_max_distance=c["relative_attention_max_distance"], norm="rmsnorm",
        norm_eps=float(c["layer_norm_epsilon"]), norm_placement="pre", final_norm=True,
        activation=ACTIVATIONS_FROM_HF[act], gated_mlp=gated, bias=False, tie_embeddings=tie,
        share_encoder_embeddings=True, scale_tied_output=bool(scale), attention_scale=1.0,
        dropout=float(c["dropout_rate"]), init_std=float(c["initializer_factor"]), init_fan_in=True,
        scale_residual_init=False, pad_token_id=c["pad_token_id"], decoder_start_token_id=c["decoder_start_token_id"],
        extra={"hf": {"model_type": MODEL_TYPE, "eos_token_id": c["eos_token_id"]}})


def config_to_hf(cfg: ModelConfig) -> dict:
    for name, value in _T5_WIRING.items():
        if getattr(cfg, name) != value:
            raise ConfigError(f"the T5 format needs {name}={value!r}; this model has {getattr(cfg, name)!r}")
    if cfg.attention_scale != 1.0 or cfg.n_kv_head != cfg.n_head:
        raise ConfigError("the T5 format needs attention_scale=1.0 and no grouped-query attention")
    if cfg.activation not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"the T5 format has no activation {cfg.activation!r}")
    act = ACTIVATIONS_TO_HF[cfg.activation]
    ff = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if cfg.gated_mlp else act
    hf_extra = cfg.extra.get("hf", {}) if isinstance(cfg.extra.get("hf"), dict) else {}
    return {"model_type": MODEL_TYPE, "architectures": [ARCHITECTURE], "is_encoder_decoder": True,
            "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.head_dim, "d_ff": cfg.d_ff,
            "num_layers": cfg.encoder_layers, "num_decoder_layers": cfg.n_layer, "num_heads": cfg.n_head,
            "relative_attention_num_buckets": cfg.relative_buckets,
            "relative_attention_max_distance": cfg.relative_max_distance, "dropout_rate": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps, "initializer_factor": cfg.init_std, "feed_forward_proj": ff,
            "tie_word_embeddings": cfg.tie_embeddings, "pad_token_id": cfg.pad_token_id or 0,
            "eos_token_id": hf_extra.get("eos_token_id", 1),
            "decoder_start_token_id": cfg.decoder_start_token_id or 0}


def name_map(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    yield "tok_emb.weight", ("shared.weight",)
    yield "enc_rel.embedding.weight", ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)
    yield "dec_rel.embedding.weight", ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)
    for side, n_layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.n_layer)):
        for i in range(n_layers):
            ours, hf = f"{side}.blocks.{i}.", f"{side}.block.{i}.layer."
            yield f"{ours}attn.qkv.weight", tuple(f"{hf}0.SelfAttention.{n}.weight" for n in "qkv")
            yield f"{ours}attn.out.weight", (f"{hf}0.SelfAttention.o.weight",)
            yield f"{ours}norm1.weight", (f"{hf}0.layer_norm.weight",)
            ff = 1
            if side == "decoder":
                yield f"{ours}cross_attn.q.weight", (f"{hf}1.EncDecAttention.q.weight",)
                yield f"{ours}cross_attn.kv.weight", (f"{hf}1.EncDecAttention.k.weight", f"{hf}1.EncDecAttention.v.weight")
                yield f"{ours}cross_attn.out.weight", (f"{hf}1.EncDecAttention.o.weight",)
                yield f"{ours}norm_cross.weight", (f"{hf}1.layer_norm.weight",)
                ff = 2
            wi = ("wi_0", "wi_1") if cfg.gated_mlp else ("wi", None)
            yield f"{ours}mlp.fc_in.weight", (f"{hf}{ff}.DenseReluDense.{wi[0]}.weight",)
            if cfg.gated_mlp:
                yield f"{ours}mlp.fc_gate.weight", (f"{hf}{ff}.DenseReluDense.{wi[1]}.weight",)
            yield f"{ours}mlp.fc_out.weight", (f"{hf}{ff}.DenseReluDense.wo.weight",)
            yield f"{ours}norm2.weight", (f"{hf}{ff}.layer_norm.weight",)
        yield f"{side}.norm_f.weight", (f"{side}.final_layer_norm.weight",)
    yield "lm_head.weight", ("shared.weight" if cfg.tie_embeddings else "lm_head.weight",)


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    hf = {k: v for k, v in sd.items() if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    if cfg.tie_embeddings:
        drop_tied_head(hf, "shared.weight")
    return stacked_from_hf(hf, cfg, list(name_map(cfg)), "T5")


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    skip = frozenset({"lm_head.weight"} if cfg.tie_embeddings else ())
    return stacked_to_hf(sd, cfg, list(name_map(cfg)), "T5", skip)
