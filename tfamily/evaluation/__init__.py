"""Evaluation metrics: perplexity (Transformer-XL: segment by segment with memory), BLEU and chrF;
accuracy / F1, entity F1 (seqeval), QA exact match / F1."""

from .bleu import BleuResult, bleu
from .classification import (
    ClassificationResult,
    EntityResult,
    QAResult,
    classification_scores,
    entity_f1,
    normalize_answer,
    qa_scores,
)
from .perplexity import PerplexityResult, perplexity
from .segments import segment_perplexity

__all__ = ["BleuResult", "bleu", "PerplexityResult", "perplexity", "segment_perplexity", "ClassificationResult",
           "classification_scores",
           "EntityResult", "entity_f1", "QAResult", "qa_scores", "normalize_answer"]
