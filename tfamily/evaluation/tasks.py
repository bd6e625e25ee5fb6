"""Predictions of fine-tuned task models over whole datasets, batched, in input order."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..objectives.base import Batch
from ..objectives.classification import (SequenceClassificationObjective, TokenClassificationObjective,
                                         word_predictions)


def _run(model: nn.Module, batch: Batch) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in batch.inputs.items()}).logits.float().cpu()


@torch.inference_mode()
def predict_classes(model: nn.Module, tokenizer, texts: Sequence[str], texts_b: Sequence[str] | None = None,
                    max_len: int | None = None, batch_size: int = 64) -> list[int]:
    """The most likely class id of each text (or pair)."""
    objective = SequenceClassificationObjective(tokenizer, max_len or model.cfg.max_seq_len)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths, little padding
    out = [0] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = objective.prepare([(texts[i], texts_b[i] if texts_b is not None else None, 0) for i in idx])
        for i, label in zip(idx, _run(model, batch).argmax(-1).tolist()):
            out[i] = label
    return out


@torch.inference_mode()
def predict_tags(model: nn.Module, tokenizer, sentences: Sequence[Sequence[str]], max_len: int | None = None,
                 batch_size: int = 32) -> list[list[int]]:
    """A tag id per word of each sentence; words cut off by ``max_len`` get tag 0 ("O")."""
    objective = TokenClassificationObjective(tokenizer, max_len or model.cfg.max_seq_len)
    out: list[list[int]] = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        batch = objective.prepare([(words, [0] * len(words)) for words in chunk])
        for words, tags in zip(chunk, word_predictions(_run(model, batch), batch)):
            out.append(tags + [0] * (len(words) - len(tags)))
    return out


@torch.inference_mode()
def predict_answers(model: nn.Module, tokenizer, examples: Sequence, max_len: int | None = None,
                    batch_size: int = 32) -> list[str]:
    """The answer text each QAExample's context holds, by the best start / end token pair."""
    from ..objectives.span import SpanObjective, best_spans
    objective = SpanObjective(tokenizer, max_len or model.cfg.max_seq_len)
    answers = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = objective.prepare(chunk)
        for ex, row_spans, best in zip(chunk, batch.extra["spans"], best_spans(_run(model, batch), batch.extra["spans"])):
            if best is None:
                answers.append("")
                continue
            answers.append(ex.context[row_spans[best[0]][0]:row_spans[best[1]][1]])
    return answers
