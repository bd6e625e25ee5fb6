"""Fine-tuning models: a pretrained backbone (BERT's encoder, or GPT's decoder) plus one small
task head. Which one is built follows ``cfg.head``; its weights load from a pretraining
checkpoint by name (``backbone.*``, and BERT's ``pooler.*``), the head starts fresh.

    SequenceClassifier  ids ─ backbone ─ pooled (pooler / first / mean / last) ─ head ─ (B, C)
    TokenClassifier     ids ─ backbone ─ hidden (B, T, d) ─ head ─ (B, T, C)
    SpanExtractor       ids ─ backbone ─ hidden ─ head ─ start / end logits (B, T, 2)

A causal decoder (GPT-1's classification, Radford et al. 2018, section 3.2) pools its last
real token: only there has it read the whole input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..heads import Pooler, SequenceClassificationHead, SpanHead, TokenClassificationHead, pool
from .bert import EncoderBackbone
from .family import family_of
from .init import init_weights



@dataclass
class TaskOutput:
    logits: torch.Tensor  # (B, C) sequence classes, (B, T, C) token tags, or (B, T, 2) span start / end
    hidden: torch.Tensor  # (B, T, d_model)


class _TaskModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        family = family_of(cfg)
        if family.backbone is None:
            raise ValueError(f"task heads sit on an encoder or a decoder backbone, not on a {family.title}")
        self.cfg = cfg
        self.backbone = family.backbone(cfg)

    def tie_weights(self) -> None:
        """Nothing is tied: a task head has no vocabulary projection."""

    def encode(self, ids: torch.Tensor, attention_mask: torch.Tensor | None,
               token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if token_type_ids is not None:
            return self.backbone(ids, attention_mask, token_type_ids=token_type_ids).hidden
        return self.backbone(ids, attention_mask).hidden  # (B, T, d)


class FeatureExtractor(_TaskModel):
    """The bare backbone (``head="none"``), as a sentence encoder is shipped (HF ``BertModel``):
    hidden states, and BERT's pooled [CLS] when it has a pooler. ``logits`` is the pooled vector
    (or the hidden states), so code that reads an output's logits still gets its features."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.pooler = Pooler(cfg) if cfg.pooling == "pooler" and isinstance(self.backbone, EncoderBackbone) else None
        init_weights(self, cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> TaskOutput:
        hidden = self.encode(ids, attention_mask, token_type_ids)
        return TaskOutput(self.pooler(hidden) if self.pooler is not None else hidden, hidden)


class SequenceClassifier(_TaskModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.pooler = Pooler(cfg) if cfg.pooling == "pooler" else None
        self.head = SequenceClassificationHead(cfg)
        init_weights(self, cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> TaskOutput:
        hidden = self.encode(ids, attention_mask, token_type_ids)
        pooled = self.pooler(hidden) if self.pooler is not None else pool(hidden, attention_mask, self.cfg.pooling)
        return TaskOutput(self.head(pooled), hidden)


class TokenClassifier(_TaskModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.head = TokenClassificationHead(cfg)
        init_weights(self, cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> TaskOutput:
        hidden = self.encode(ids, attention_mask, token_type_ids)
        return TaskOutput(self.head(hidden), hidden)


class SpanExtractor(_TaskModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.head = SpanHead(cfg)
        init_weights(self, cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> TaskOutput:
        hidden = self.encode(ids, attention_mask, token_type_ids)
        return TaskOutput(self.head(hidden), hidden)


TASK_MODELS = {"none": FeatureExtractor, "sequence_classification": SequenceClassifier,
               "token_classification": TokenClassifier,
               "span": SpanExtractor}
