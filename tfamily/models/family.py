"""One door per family: everything that differs between the architectures, in one table.

    arch (ModelConfig.arch) ─▶ Family: the model it builds, the backbone task heads sit on,
                               how it decodes, how its training data and objective are made,
                               the fields a new model takes from its tokenizer and data,
                               and what it can do.

The CLI, the server, the page, the benchmarks and the tests ask this table (``family_of(cfg)``)
and never compare ``cfg.arch`` themselves. Layers above ``models/`` implement each *kind* once
and look it up by the name given here: ``generation.states.STATES[family.decoding]`` is the
decoding state, ``training.recipes.RECIPES[family.recipe]`` the data + objective recipe. Adding
a family is one entry below plus its own files (and, for a new way of decoding or of making
training data, one new kind in those tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..config import ModelConfig
from ..nn.positions import glm_row_limit
from .bert import EncoderBackbone, MaskedLM
from .glm import GLM
from .gpt import DecoderBackbone, CausalLM
from .rnn import BiLM, BiRNNBackbone, RNNLM
from .rnn_seq2seq import RNNSeq2Seq
from .seq2seq import EncoderDecoder
from .transformer_xl import TransformerXL

ABILITIES = ("generate", "translate", "infill", "embed", "classify")


@dataclass(frozen=True)
class Family:
    name: str  # the ModelConfig.arch value that selects this family; how messages name it
    title: str  # for people: error messages, `tfamily presets`, the page
    builder: Callable[[ModelConfig], nn.Module]  # the pretraining model (head="lm")
    abilities: frozenset[str]
    decoding: str | None = None  # kind of decoding State (generation/states.py STATES); None: does not generate
    prompt: str = "continue"  # what a text prompt is: "continue" (the text goes on), "source" (the encoder's
    #                           input; the output is the decoder's), "blanks" (GLM: [MASK]s to fill)
    recipe: str = "text"  # kind of training data + objective (training/recipes.py RECIPES)
    backbone: Callable[[ModelConfig], nn.Module] | None = None  # what task heads (classify, tag, QA) sit on
    default_pooling: str = "first"  # how a sequence becomes one vector when the checkpoint does not say
    evaluation: str | None = "perplexity"  # what `tfamily eval` scores: perplexity, segments, bleu; None: nothing
    windows_past_context: bool = False  # training windows may be longer than max_seq_len (segments, batches)
    mixing: str = "attention"  # how tokens see each other: "attention", or "recurrence" (an RNN's state)
    data_fields: Callable[[Any, int], dict[str, Any]] = field(default=lambda tokenizer, seq_len: {})
    # ^ fields a new model takes from its tokenizer and training window (beyond vocab_size and pad_token_id)

    def can(self, ability: str) -> bool:
        if ability not in ABILITIES:
            raise KeyError(f"unknown ability {ability!r}; known: {', '.join(ABILITIES)}")
        return ability in self.abilities

    def layers(self, cfg: ModelConfig) -> str:
        """'4' or, for an encoder-decoder, '6 + 6' (encoder + decoder)."""
        return f"{cfg.encoder_layers} + {cfg.n_layer}" if self.prompt == "source" else str(cfg.n_layer)

    def __str__(self) -> str:
        """How messages name it: "family 'encoder' (bidirectional encoder (BERT))"."""
        return f"family {self.name!r} ({self.title})"


def _target_start(tok) -> dict:
    """An encoder-decoder's target starts from <s> when the tokenizer has one."""
    return {"decoder_start_token_id": tok.bos_id} if tok.bos_id is not None else {}


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("decoder", "decoder-only language model (GPT-1/2, Llama-style)", CausalLM,
           frozenset({"generate", "embed", "classify"}), decoding="causal", recipe="text", backbone=DecoderBackbone,
           default_pooling="last",
           data_fields=lambda tok, seq_len: {"max_seq_len": seq_len}),  # a context as long as what it trains on
    Family("encoder", "bidirectional encoder (BERT)", MaskedLM, frozenset({"embed", "classify"}),
           recipe="sentences", backbone=EncoderBackbone, evaluation=None),
    Family("encoder-decoder", "encoder-decoder (Transformer, T5, BART)", EncoderDecoder,
           frozenset({"generate", "translate"}), decoding="seq2seq", prompt="source", recipe="pairs",
           evaluation="bleu", windows_past_context=True, data_fields=lambda tok, seq_len: _target_start(tok)),
    Family("glm", "GLM (autoregressive blank infilling)", GLM, frozenset({"generate", "infill"}), decoding="glm",
           prompt="blanks", recipe="glm",
           data_fields=lambda tok, seq_len: {"decoder_start_token_id": tok.special_ids["span_start"],  # [S]
                                             "max_seq_len": glm_row_limit(seq_len + 1)}),  # Part A + Part B
    Family("transformer-xl", "Transformer-XL (segment recurrence)", TransformerXL, frozenset({"generate"}),
           decoding="recurrent", recipe="text", evaluation="segments", windows_past_context=True),
    Family("rnn", "recurrent language model (LSTM / GRU)", RNNLM, frozenset({"generate"}), decoding="rnn",
           recipe="text", mixing="recurrence", data_fields=lambda tok, seq_len: {"max_seq_len": seq_len}),
    Family("birnn", "bidirectional recurrent LM (ELMo-style BiLSTM)", BiLM, frozenset({"embed", "classify"}),
           recipe="bilm", backbone=BiRNNBackbone, default_pooling="mean", evaluation=None, mixing="recurrence",
           data_fields=lambda tok, seq_len: {"max_seq_len": seq_len}),
    Family("rnn-seq2seq", "RNN encoder-decoder with additive attention (Bahdanau et al.)", RNNSeq2Seq,
           frozenset({"generate", "translate"}), decoding="seq2seq", prompt="source", recipe="pairs",
           evaluation="bleu", windows_past_context=True, mixing="recurrence",
           data_fields=lambda tok, seq_len: _target_start(tok)),
]}


def family_of(cfg: ModelConfig | str) -> Family:
    """The Family of a config (or of an arch name); a clear error for an unknown one."""
    arch = cfg if isinstance(cfg, str) else cfg.arch
    try:
        return FAMILIES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(FAMILIES)}") from None


def families_that(ability: str) -> list[Family]:
    return [f for f in FAMILIES.values() if f.can(ability)]
