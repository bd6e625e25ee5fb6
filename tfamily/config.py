"""ModelConfig: every architectural difference between the families is a field here.

A config is plain data: it validates itself on construction (a bad value raises a
``ConfigError`` that names the field), and it round-trips through JSON exactly, so a
checkpoint's ``config.json`` is enough to rebuild its model.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

Arch = Literal["decoder", "encoder", "encoder-decoder", "glm", "transformer-xl", "rnn", "birnn", "rnn-seq2seq"]
Cell = Literal["lstm", "gru"]
Head = Literal["lm", "none", "sequence_classification", "token_classification", "span"]
Pooling = Literal["pooler", "first", "mean", "last"]
Position = Literal["learned", "sinusoidal", "rotary", "t5_relative", "glm_2d", "xl_relative", "none"]
Norm = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class ValidatedConfig:
    """Shared by the config dataclasses: type checks from annotations, dict round trips
    that reject unknown keys by name."""

    _kind = "config"

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_value(f.name, getattr(self, f.name), hints[f.name])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        cls.check_fields(data)
        return cls(**data)

    @classmethod
    def check_fields(cls, data: Any) -> None:
        """Check a partial dict (a run config's section, a saved state) field by field: a
        mapping, every key a field of this config, every value of the field's type. Checks
        that need all fields together (ranges, one field against another) are left to the
        constructor. A ConfigError names the field (and a close known name for a typo)."""
        import difflib

        if not isinstance(data, dict):
            raise ConfigError(f"{cls._kind} fields must be a mapping of field: value, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(str(u), list(fields), 1))
                     else str(u) for u in unknown]
            raise ConfigError(f"unknown {cls._kind} field(s): {', '.join(hints)}")
        types = typing.get_type_hints(cls)
        for name, value in data.items():
            _check_value(name, value, types[name])


@dataclass
class ModelConfig(ValidatedConfig):
    """Shape and wiring of one model.

    Families differ only by these fields: GPT-1 is ``norm_placement="post"`` with no
    final norm, GPT-2 is ``"pre"`` with a final LayerNorm and tanh-GELU, and so on.
    """

    arch: Arch = "decoder"  # which stacks the builder wires: decoder-only (causal), encoder-only, encoder-decoder
    head: Head = "lm"  # lm: the family's pretraining head (causal LM, MLM for encoders); none: the bare backbone; else a task
    num_labels: int = 2  # classes of a classification head (labels' names go in extra["labels"])
    pooling: Pooling = "pooler"  # sequence classification: pooler = dense + tanh on the first token (BERT)
    nsp: bool = False  # encoder pretraining (head="lm"): also predict whether sentence B follows A (NSP)
    vocab_size: int = 50257
    d_model: int = 768
    n_layer: int = 12  # decoder blocks (decoder-only: all blocks)
    n_encoder_layer: Optional[int] = None  # encoder-decoder: encoder blocks; None = n_layer
    n_head: int = 12
    d_head: Optional[int] = None  # size of one attention head; None = d_model / n_head (T5 v1.1 sets its own)
    attention_scale: Optional[float] = None  # scores times this; None = 1 / sqrt(head size); T5 folds it into init: 1.0
    n_kv_head: Optional[int] = None  # key/value heads; None = n_head (plain multi-head)
    d_ff: Optional[int] = None  # feed-forward width; None = 4 * d_model
    max_seq_len: int = 1024  # longest sequence the position module supports
    position: Position = "learned"  # learned / sinusoidal: added to the embeddings; rotary: turns q and k
    rope_theta: float = 10000.0  # rotary base: frequencies theta^(-2i/head_dim) (Su et al. 2021)
    relative_buckets: int = 32  # t5_relative: log-spaced distance buckets, one learned bias per bucket and head
    relative_max_distance: int = 128  # t5_relative: distances beyond this share the last bucket
    position_offset: int = 0  # learned positions: table rows start here (BART keeps 2 unused rows first)
    cell: Cell = "lstm"  # rnn, birnn, rnn-seq2seq: the recurrent unit of each layer (torch.nn.LSTM or GRU, d_model units)
    mem_len: int = 0  # transformer-xl: hidden states of this many earlier positions each layer attends to (Dai et al. 2019); 0 = none
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: NormPlacement = "pre"
    final_norm: bool = True  # a norm after the last block (pre-LN models need it)
    activation: Activation = "gelu"
    gated_mlp: bool = False  # SwiGLU-style gate: act(x W1) * (x W3)
    bias: bool = True  # biases in linear layers and norms
    qkv_bias: bool = False  # biases on the q, k and v projections even where bias is False (Qwen2)
    tie_embeddings: bool = True  # LM head shares the token embedding matrix
    lm_head_bias: bool = False  # a bias on the vocabulary logits (BART's final_logits_bias)
    scale_tied_output: bool = False  # hidden states times d_model^-0.5 before a tied LM head (T5)
    share_encoder_embeddings: bool = True  # encoder-decoder: source and target share one embedding (joint vocabulary)
    type_vocab_size: int = 0  # segment embeddings (BERT's sentence A / B); 0 = none
    embed_norm: bool = False  # a norm right after the embeddings (BERT, BART)
    scale_embeddings: bool = False  # token embeddings times sqrt(d_model) (Vaswani et al. 2017, section 3.4)
    decoder_start_token_id: Optional[int] = None  # encoder-decoder: the token the decoder starts from; glm: [S], which starts every span
    dropout: float = 0.0  # embedding, residual and attention-probability dropout
    init_std: float = 0.02
    init_fan_in: bool = False  # linears ~ N(0, 1 / fan_in), embeddings ~ N(0, init_std^2): T5's (Mesh TensorFlow) init
    scale_residual_init: bool = True  # GPT-2: output projections get std / sqrt(2 * n_layer)
    pad_token_id: Optional[int] = None
    # What travels with a checkpoint for the code around the model; the model itself never reads it.
    # Its keys, and who reads them:
    #   labels              class / tag names of a task head       (finetune writes; eval, the HF BERT export read)
    #   task                classify, tag or qa                    (finetune writes; for people)
    #   source_prefix       T5-style task prefix put before every source   (train writes; translate reads)
    #   sentence_embedding  how a sentence encoder pools            (HF import writes; embed, knn, the server read)
    #   hf                  HF config fields tfamily has no use for (HF import writes; HF export writes them back)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_types()
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "d_model", "n_layer", "encoder_layers", "n_head", "n_kv_head", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_head is None and self.d_model % self.n_head:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}), or set d_head")
        if self.d_head is not None and self.d_head <= 0:
            raise ConfigError(f"d_head must be positive, got {self.d_head}")
        if (self.arch == "glm") != (self.position == "glm_2d"):
            raise ConfigError(f"position='glm_2d' (position in Part A + position inside the span) goes with "
                              f"arch='glm' and only there; got arch={self.arch!r}, position={self.position!r}")
        if self.arch == "glm" and self.head != "lm":
            raise ConfigError(f"head={self.head!r}: arch='glm' is wired with its blank-infilling LM head only (head='lm')")
        if (self.arch == "transformer-xl") != (self.position == "xl_relative"):
            raise ConfigError(f"position='xl_relative' (Transformer-XL's relative attention) goes with "
                              f"arch='transformer-xl' and only there; got arch={self.arch!r}, position={self.position!r}")
        if self.arch == "transformer-xl" and self.head != "lm":
            raise ConfigError(f"head={self.head!r}: arch='transformer-xl' is wired with its LM head only (head='lm')")
        if self.arch in ("rnn", "birnn", "rnn-seq2seq") and self.position != "none":
            raise ConfigError(f"arch={self.arch!r} has no positions (the recurrence orders the tokens): needs "
                              f"position='none', got {self.position!r}")
        if (self.arch in ("rnn", "rnn-seq2seq") and self.head != "lm") or (self.arch == "birnn" and self.head == "span"):
            raise ConfigError(f"head={self.head!r} is not wired for arch={self.arch!r} (rnn, rnn-seq2seq: lm; birnn: "
                              "lm, none, sequence_classification, token_classification)")
        if self.arch in ("birnn", "rnn-seq2seq") and self.d_model % 2:
            raise ConfigError(f"arch={self.arch!r} splits d_model between two directions: it must be even, "
                              f"got {self.d_model}")
        if self.mem_len < 0 or (self.mem_len and self.arch != "transformer-xl"):
            raise ConfigError(f"mem_len must be >= 0 and is used by arch='transformer-xl' only; got {self.mem_len} "
                              f"with arch={self.arch!r}")
        if self.position == "xl_relative" and self.d_model % 2:
            raise ConfigError(f"position='xl_relative' needs an even d_model for its sinusoid, got {self.d_model}")
        if self.position == "t5_relative" and self.arch != "encoder-decoder":
            raise ConfigError("position='t5_relative' is wired for arch='encoder-decoder' (T5)")
        if self.relative_buckets <= 1 or self.relative_max_distance <= 1 or self.position_offset < 0:
            raise ConfigError("relative_buckets and relative_max_distance must be > 1, position_offset >= 0")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.num_labels <= 0 or self.type_vocab_size < 0:
            raise ConfigError("num_labels must be positive and type_vocab_size >= 0")
        if self.head != "lm" and self.arch == "encoder-decoder":
            raise ConfigError(f"head={self.head!r} needs an encoder or decoder backbone, not arch='encoder-decoder'")
        if self.head == "sequence_classification" and self.arch == "decoder" and self.pooling in ("pooler", "first"):
            raise ConfigError(f"pooling={self.pooling!r} reads the first token, which a causal decoder computes "
                              "before seeing the rest; use pooling='last' (GPT-1) or 'mean'")
        if self.nsp and self.arch != "encoder":
            raise ConfigError(f"nsp (next-sentence prediction) needs arch='encoder', not {self.arch!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta}")
        if self.position == "rotary" and self.head_dim % 2:
            raise ConfigError(f"position='rotary' needs an even head size; d_model / n_head = {self.head_dim}")
        if self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("norm_eps and init_std must be positive")
        for name in ("pad_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name} ({value}) is outside the vocabulary (0..{self.vocab_size - 1})")

    @property
    def encoder_layers(self) -> int:
        return self.n_layer if self.n_encoder_layer is None else self.n_encoder_layer

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_head

    # ---- serialisation -------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        unknown = sorted(set(changes) - set(data))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        data.update(changes)
        return type(self).from_dict(data)


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Check one value against its annotation: Literal, Optional, int/float/bool/dict."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{name} must be one of {choices}; got {value!r}")
        return
    if origin is typing.Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        (inner,) = [a for a in args if a is not type(None)]
        return _check_value(name, value, inner)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is dict:
        ok = isinstance(value, dict)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{name} must be {hint.__name__}; got {type(value).__name__} {value!r}")
