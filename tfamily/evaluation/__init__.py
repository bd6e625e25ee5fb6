"""Evaluation metrics: perplexity, BLEU and chrF; accuracy and F1 come with their families."""

from .bleu import BleuResult, bleu
from .perplexity import PerplexityResult, perplexity

__all__ = ["BleuResult", "bleu", "PerplexityResult", "perplexity"]
