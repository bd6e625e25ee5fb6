"""Evaluation metrics: perplexity now; BLEU, accuracy, F1 with their families."""

from .perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
