"""BERT in the Hugging Face format <-> our ModelConfig and state dict.

Which of our models a folder becomes follows its ``architectures``:

    BertForPreTraining              MaskedLM, nsp=True          (MLM + next-sentence heads)
    BertForMaskedLM                 MaskedLM, nsp=False
    BertModel                       head="none": the encoder (+ pooler), e.g. sentence encoders
    BertForSequenceClassification   SequenceClassifier (pooler + classifier)
    BertForTokenClassification      TokenClassifier
    BertForQuestionAnswering        SpanExtractor

Weight names, ours on the left (L = layer; HF's carry a ``bert.`` prefix except in BertModel):

    backbone.tok_emb / pos_emb / type_emb     embeddings.{word,position,token_type}_embeddings
    backbone.emb_norm                         embeddings.LayerNorm
    backbone.stack.blocks.L.attn.qkv          encoder.layer.L.attention.self.{query,key,value}  rows q|k|v
    backbone.stack.blocks.L.attn.out          encoder.layer.L.attention.output.dense
    backbone.stack.blocks.L.norm1             encoder.layer.L.attention.output.LayerNorm   (post-LN)
    backbone.stack.blocks.L.mlp.fc_in         encoder.layer.L.intermediate.dense
    backbone.stack.blocks.L.mlp.fc_out        encoder.layer.L.output.dense
    backbone.stack.blocks.L.norm2             encoder.layer.L.output.LayerNorm
    pooler.dense                              pooler.dense
    mlm.dense / mlm.norm                      cls.predictions.transform.dense / .LayerNorm
    mlm.decoder.weight / .bias                word embeddings (tied) / cls.predictions.bias
    nsp.proj                                  cls.seq_relationship
    head.proj                                 classifier (sequence, token) / qa_outputs (span)

``embeddings.position_ids`` is a buffer of 0..511, not a weight, and is skipped.
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import torch

from ..config import ConfigError, ModelConfig
from .hf_gpt2 import ACTIVATIONS_FROM_HF, ACTIVATIONS_TO_HF
from .io import StateDict, merged_hf_config, stacked_from_hf, stacked_to_hf, strip_prefix

MODEL_TYPE = "bert"
PREFIX = "bert."
EMBED = "embeddings.word_embeddings.weight"
_IGNORED = re.compile(r"embeddings\.position_ids|cls\.predictions\.decoder\.bias")

# architecture -> (our head, nsp)
ARCHITECTURES = {
    "BertForPreTraining": ("lm", True), "BertForMaskedLM": ("lm", False), "BertModel": ("none", False),
    "BertForSequenceClassification": ("sequence_classification", False),
    "BertForTokenClassification": ("token_classification", False), "BertForQuestionAnswering": ("span", False),
}
_TASK_HEAD_NAME = {"sequence_classification": "classifier", "token_classification": "classifier",
                   "span": "qa_outputs"}

HF_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                   attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                   initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
                   position_embedding_type="absolute", is_decoder=False, add_cross_attention=False,
                   architectures=None, num_labels=None, id2label=None, tie_word_embeddings=True)
_REQUIRED = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}
_BERT_WIRING = dict(arch="encoder", position="learned", norm="layernorm", norm_placement="post", final_norm=False,
                    embed_norm=True, gated_mlp=False, bias=True, scale_embeddings=False)


# ---- config ----------------------------------------------------------------------------

def config_from_hf(hf: Mapping) -> ModelConfig:
    c = merged_hf_config(hf, MODEL_TYPE, HF_DEFAULTS, _REQUIRED, "tfamily's BERT wiring")
    arch = (c["architectures"] or ["BertModel"])[0]
    if arch not in ARCHITECTURES:
        raise ConfigError(f"architectures={c['architectures']!r} is not supported; known: {', '.join(ARCHITECTURES)}")
    head, nsp = ARCHITECTURES[arch]
    act = c["hidden_act"]
    if act not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"hidden_act={act!r} is not supported; known: {', '.join(sorted(ACTIVATIONS_FROM_HF))}")
    labels = _labels(c)
    extra = {"hf": {"model_type": MODEL_TYPE, "architecture": arch}}
    if labels:
        extra["labels"] = labels
    return ModelConfig(
        arch="encoder", head=head, nsp=nsp, num_labels=len(labels) if labels else 2,
        pooling="pooler" if head in ("none", "sequence_classification") else "mean",
        vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layer=c["num_hidden_layers"],
        n_head=c["num_attention_heads"], d_ff=c["intermediate_size"], max_seq_len=c["max_position_embeddings"],
        position="learned", type_vocab_size=c["type_vocab_size"], embed_norm=True, norm="layernorm",
        norm_eps=float(c["layer_norm_eps"]), norm_placement="post", final_norm=False,
        activation=ACTIVATIONS_FROM_HF[act], bias=True, tie_embeddings=bool(c["tie_word_embeddings"]),
        dropout=float(c["hidden_dropout_prob"]), init_std=float(c["initializer_range"]), scale_residual_init=False,
        pad_token_id=c["pad_token_id"] if isinstance(c["pad_token_id"], int) else None, extra=extra)


def _labels(c: Mapping) -> list[str]:
    """Class names in id order from id2label (or generic names from num_labels)."""
    if c["id2label"]:
        pairs = sorted((int(i), name) for i, name in c["id2label"].items())
        return [name for _, name in pairs]
    return [f"LABEL_{i}" for i in range(c["num_labels"])] if c["num_labels"] else []


def config_to_hf(cfg: ModelConfig) -> dict:
    for name, value in _BERT_WIRING.items():
        if getattr(cfg, name) != value:
            raise ConfigError(f"the BERT format needs {name}={value!r}; this model has {getattr(cfg, name)!r}")
    if cfg.n_kv_head != cfg.n_head:
        raise ConfigError("the BERT format has no grouped-query attention (n_kv_head must equal n_head)")
    if cfg.activation not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"the BERT format has no activation {cfg.activation!r}")
    if cfg.type_vocab_size == 0:
        raise ConfigError("the BERT format needs segment embeddings (type_vocab_size > 0)")
    if cfg.head == "sequence_classification" and cfg.pooling != "pooler":
        raise ConfigError(f"BertForSequenceClassification classifies the pooler output; this model pools "
                          f"{cfg.pooling!r}")
    arch = _architecture(cfg)
    out = {
        "model_type": MODEL_TYPE, "architectures": [arch], "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.d_ff, "hidden_act": ACTIVATIONS_TO_HF[cfg.activation],
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.max_seq_len, "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std, "layer_norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else 0,
        "position_embedding_type": "absolute", "tie_word_embeddings": cfg.tie_embeddings,
    }
    if cfg.head in _TASK_HEAD_NAME and cfg.head != "span":
        labels = cfg.extra.get("labels") or [f"LABEL_{i}" for i in range(cfg.num_labels)]
        out["id2label"] = {str(i): name for i, name in enumerate(labels)}
        out["label2id"] = {name: i for i, name in enumerate(labels)}
    return out


def _architecture(cfg: ModelConfig) -> str:
    for arch, (head, nsp) in ARCHITECTURES.items():
        if head == cfg.head and (head != "lm" or nsp == cfg.nsp) and (head != "none" or cfg.pooling == "pooler"):
            return arch
    return "BertModel"


# ---- weights ---------------------------------------------------------------------------

def name_map(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(our name, HF names) for every tensor of our state dict; several HF names are stacked
    row-wise (q|k|v). HF names are as in the task classes (with ``bert.`` where it belongs)."""
    body = "" if cfg.head == "none" else PREFIX
    emb = f"{body}embeddings."
    yield "backbone.tok_emb.weight", (f"{body}{EMBED}",)
    yield "backbone.pos_emb.weight", (f"{emb}position_embeddings.weight",)
    yield "backbone.type_emb.weight", (f"{emb}token_type_embeddings.weight",)
    for p in ("weight", "bias"):
        yield f"backbone.emb_norm.{p}", (f"{emb}LayerNorm.{p}",)
    for i in range(cfg.n_layer):
        ours, hf = f"backbone.stack.blocks.{i}.", f"{body}encoder.layer.{i}."
        for p in ("weight", "bias"):
            yield f"{ours}attn.qkv.{p}", tuple(f"{hf}attention.self.{n}.{p}" for n in ("query", "key", "value"))
            yield f"{ours}attn.out.{p}", (f"{hf}attention.output.dense.{p}",)
            yield f"{ours}norm1.{p}", (f"{hf}attention.output.LayerNorm.{p}",)
            yield f"{ours}mlp.fc_in.{p}", (f"{hf}intermediate.dense.{p}",)
            yield f"{ours}mlp.fc_out.{p}", (f"{hf}output.dense.{p}",)
            yield f"{ours}norm2.{p}", (f"{hf}output.LayerNorm.{p}",)
    nsp = cfg.nsp and cfg.head == "lm"  # next-sentence prediction is a pretraining head only
    has_pooler = nsp or (cfg.head in ("none", "sequence_classification") and cfg.pooling == "pooler")
    for p in ("weight", "bias"):
        if has_pooler:
            yield f"pooler.dense.{p}", (f"{body}pooler.dense.{p}",)
        if cfg.head == "lm":
            yield f"mlm.dense.{p}", (f"cls.predictions.transform.dense.{p}",)
            yield f"mlm.norm.{p}", (f"cls.predictions.transform.LayerNorm.{p}",)
        if nsp:
            yield f"nsp.proj.{p}", (f"cls.seq_relationship.{p}",)
        if cfg.head in _TASK_HEAD_NAME:
            yield f"head.proj.{p}", (f"{_TASK_HEAD_NAME[cfg.head]}.{p}",)
    if cfg.head == "lm":
        yield "mlm.decoder.weight", ((f"{body}{EMBED}" if cfg.tie_embeddings else "cls.predictions.decoder.weight"),)
        yield "mlm.decoder.bias", ("cls.predictions.bias",)


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """Our state dict from a BERT one. Names and shapes are checked first; every problem in one error."""
    hf = {k: v for k, v in sd.items() if not _IGNORED.fullmatch(k)}
    if cfg.head == "none":
        hf = strip_prefix(hf, PREFIX, _IGNORED)  # a BertModel saved from inside a task model keeps its prefix
    if cfg.tie_embeddings:
        hf.pop("cls.predictions.decoder.weight", None)
    return stacked_from_hf(hf, cfg, list(name_map(cfg)), "BERT")


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> StateDict:
    """A BERT state dict as the matching ``Bert*`` class saves it: q|k|v split, a tied decoder
    written once (as the word embedding)."""
    skip = frozenset({"mlm.decoder.weight"} if cfg.tie_embeddings else ())
    return stacked_to_hf(sd, cfg, list(name_map(cfg)), "BERT", skip)
