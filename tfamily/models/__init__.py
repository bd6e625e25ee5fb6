"""One short builder per family; ``build_model`` asks the family registry (family.py) for it."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .gpt import DecoderBackbone, CausalLM, DecoderOutput, LMOutput, BackboneLM
from .bert import EncoderBackbone, EncoderOutput, MaskedLM, MaskedLMOutput
from .seq2seq import EncoderDecoder, Seq2SeqOutput
from .glm import GLM, GLMBackbone
from .transformer_xl import TransformerXL, TransformerXLBackbone, XLOutput
from .family import FAMILIES, Family, family_of
from .tasks import TASK_MODELS, FeatureExtractor, SequenceClassifier, SpanExtractor, TaskOutput, TokenClassifier

def build_model(cfg: ModelConfig) -> nn.Module:
    """The family's pretraining model (``head="lm"``, see models/family.py), or a backbone
    with a task head."""
    builder = family_of(cfg).builder if cfg.head == "lm" else TASK_MODELS.get(cfg.head)
    if builder is None:
        raise ValueError(f"no model for head {cfg.head!r}; known: lm, {', '.join(TASK_MODELS)}")
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


__all__ = ["DecoderBackbone", "CausalLM", "DecoderOutput", "LMOutput", "EncoderDecoder", "Seq2SeqOutput", "EncoderBackbone",
           "EncoderOutput", "MaskedLM", "MaskedLMOutput", "SequenceClassifier", "TokenClassifier", "SpanExtractor",
           "TaskOutput", "TASK_MODELS", "FeatureExtractor", "GLM", "GLMBackbone", "TransformerXL", "BackboneLM",
           "TransformerXLBackbone", "XLOutput", "build_model", "model_from_state_dict", "FAMILIES", "Family", "family_of"]
