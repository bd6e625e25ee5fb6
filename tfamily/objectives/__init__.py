"""Objectives: pure functions from raw token windows to a Batch, and from logits to a loss.

They never touch a model, so each can be unit-tested on its own.
"""

from .base import IGNORE_INDEX, Batch, Objective
from .causal_lm import CausalLMObjective
from .mlm import MaskedLMObjective
from .seq2seq import Seq2SeqObjective

OBJECTIVES = {"causal_lm": CausalLMObjective, "seq2seq": Seq2SeqObjective, "mlm": MaskedLMObjective}

__all__ = ["IGNORE_INDEX", "Batch", "Objective", "CausalLMObjective", "Seq2SeqObjective", "MaskedLMObjective", "OBJECTIVES"]
