"""Decoding: sampling filters, the one decode generator, and text-level helpers."""

from . import filters
from .decode import SamplingParams, Step, decode, pick
from .text import Generation, generate, stream
from .beam import Hypothesis, beam_search
from .translate import Translation, translate

__all__ = ["filters", "SamplingParams", "Step", "decode", "pick", "Generation", "generate", "stream",
           "Hypothesis", "beam_search", "Translation", "translate"]
