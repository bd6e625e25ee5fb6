"""One short builder per family; ``build_model`` picks it from ``config.arch``."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .gpt import GPT, CausalLM, DecoderOutput, LMOutput, TiedLM
from .bert import Encoder, EncoderOutput, MaskedLM, MaskedLMOutput
from .seq2seq import EncoderDecoder, Seq2SeqOutput
from .glm import GLM, GLMBackbone
from .transformer_xl import TransformerXL, TransformerXLBackbone, XLOutput
from .tasks import TASK_MODELS, FeatureExtractor, SequenceClassifier, SpanExtractor, TaskOutput, TokenClassifier

BUILDERS = {"decoder": CausalLM, "encoder": MaskedLM, "encoder-decoder": EncoderDecoder}  # pretraining models
BUILDERS["glm"] = GLM  # blank infilling: Part A bidirectional, Part B autoregressive (models/glm.py)
BUILDERS["transformer-xl"] = TransformerXL  # segment recurrence + relative positions (models/transformer_xl.py)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The family's pretraining model (``head="lm"``), or a backbone with a task head."""
    builder = BUILDERS.get(cfg.arch) if cfg.head == "lm" else TASK_MODELS.get(cfg.head)
    if builder is None:
        raise ValueError(f"no builder for arch {cfg.arch!r} with head {cfg.head!r}")
    return builder(cfg)


def model_from_state_dict(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """A model whose tensors ARE ``state``: built on the meta device, so no time goes into a
    random initialisation that would be overwritten at once (seconds for a 135M model).

    ``assign=True`` installs each tensor as its own parameter, which unties a tied head;
    ``tie_weights`` restores the sharing. Any tensor left on the meta device (a buffer the
    state dict does not carry) would be garbage, so that is an error.
    """
    with torch.device("meta"):
        model = build_model(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise ValueError(f"model tensors not set by the state dict: {left_on_meta[:5]}")
    return model


__all__ = ["GPT", "CausalLM", "DecoderOutput", "LMOutput", "EncoderDecoder", "Seq2SeqOutput", "Encoder",
           "EncoderOutput", "MaskedLM", "MaskedLMOutput", "SequenceClassifier", "TokenClassifier", "SpanExtractor",
           "TaskOutput", "TASK_MODELS", "FeatureExtractor", "GLM", "GLMBackbone", "TransformerXL", "TiedLM",
           "TransformerXLBackbone", "XLOutput", "build_model", "model_from_state_dict", "BUILDERS"]
