"""Decoding: sampling filters, the one decode generator, and text-level helpers."""

from . import filters
from .decode import SamplingParams, Step, decode, pick
from .text import Generation, generate, stream

__all__ = ["filters", "SamplingParams", "Step", "decode", "pick", "Generation", "generate", "stream"]
