"""Decoding: the one decoding protocol (a State per family), sampling filters, the one decode
generator, and text-level helpers."""

from . import filters
from .decode import SamplingParams, decode, pick
from .states import STATES, CausalState, GLMState, Prompt, Seq2SeqState, State, XLState, start
from .step import Step, describe, top_alternatives
from .stops import StopStrings, TextStream
from .text import Generation, generate, stream
from .beam import BeamSearch, Hypothesis, beam_search
from .translate import Translation, translate

__all__ = ["filters", "SamplingParams", "Step", "decode", "pick", "Generation", "generate", "stream",
           "Hypothesis", "beam_search", "BeamSearch", "Translation", "translate", "STATES", "State", "CausalState",
           "Seq2SeqState", "GLMState", "XLState", "Prompt", "start", "describe", "top_alternatives",
           "StopStrings", "TextStream"]
