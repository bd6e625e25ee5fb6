"""Heads: small output layers on top of a backbone's hidden states, kept apart from it so
one pretrained backbone serves every task (the seeds: "fine-tuning with a small added
output layer").

    MLMHead                  hidden (B, T, d) -> vocabulary logits (B, T, V)   BERT pretraining
    Pooler                   hidden (B, T, d) -> pooled (B, d): tanh(W h_[CLS] + b)
    NSPHead                  pooled (B, d)    -> is-next logits (B, 2)
    SequenceClassificationHead  hidden, mask  -> class logits (B, C)   (pooler / first / mean / last token)
    TokenClassificationHead  hidden (B, T, d) -> tag logits (B, T, C)  (named entities)
    SpanHead                 hidden (B, T, d) -> start / end logits (B, T, 2)  (extractive QA)
"""

from .classification import SequenceClassificationHead, SpanHead, TokenClassificationHead, pool
from .mlm import MLMHead, NSPHead, Pooler

__all__ = ["MLMHead", "NSPHead", "Pooler", "SequenceClassificationHead", "TokenClassificationHead", "SpanHead",
           "pool"]
