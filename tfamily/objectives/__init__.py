"""Objectives: pure functions from raw token windows to a Batch, and from logits to a loss.

They never touch a model, so each can be unit-tested on its own.
"""

from .base import IGNORE_INDEX, Batch, Objective, SeededRows, SeededWindows
from .causal_lm import CausalLMObjective
from .bilm import BiLMObjective
from .mlm import MaskedLMObjective
from .seq2seq import Seq2SeqObjective
from .glm import GLMObjective, GLMRaw
from .denoising import DenoisingObjective, SpanCorruptionObjective
from .classification import SequenceClassificationObjective, TokenClassificationObjective
from .span import SpanObjective

OBJECTIVES = {"causal_lm": CausalLMObjective, "bilm": BiLMObjective, "seq2seq": Seq2SeqObjective, "mlm": MaskedLMObjective,
              "glm": GLMObjective, "span_corruption": SpanCorruptionObjective, "denoising": DenoisingObjective,
              "sequence_classification": SequenceClassificationObjective,
              "token_classification": TokenClassificationObjective, "span": SpanObjective}

__all__ = ["IGNORE_INDEX", "Batch", "Objective", "CausalLMObjective", "BiLMObjective", "Seq2SeqObjective", "MaskedLMObjective",
           "GLMObjective", "GLMRaw", "SeededRows", "SeededWindows", "SpanCorruptionObjective", "DenoisingObjective",
           "SequenceClassificationObjective", "TokenClassificationObjective", "SpanObjective", "OBJECTIVES"]
