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


# ---- scoring a fine-tuned model on a task (tfamily finetune / eval) ----------------------------

def task_scores(task: str, model, tokenizer, examples, names: list[str], max_len: int):
    """Accuracy / F1 (classify), entity-level F1 (tag), or exact match / F1 (qa) of ``model``."""
    from .classification import classification_scores, entity_f1, qa_scores
    model.eval()
    if task == "qa":
        return qa_scores(predict_answers(model, tokenizer, examples, max_len), [e.answers or [""] for e in examples])
    if task == "classify":
        has_b = any(e[1] is not None for e in examples)
        pred = predict_classes(model, tokenizer, [e[0] for e in examples],
                               [e[1] or "" for e in examples] if has_b else None, max_len)
        return classification_scores([names[p] for p in pred], [names[e[2]] for e in examples],
                                     positive=positive_class(names))
    pred = predict_tags(model, tokenizer, [e[0] for e in examples], max_len)
    return entity_f1([[names[t] for t in p] for p in pred], [[names[t] for t in e[1]] for e in examples])


def positive_class(names: list[str]) -> str | None:
    """The positive class of a binary task, when its name says so."""
    for candidate in ("pos", "positive", "fresh", "1", "true", "yes"):
        if len(names) == 2 and candidate in names:
            return candidate
    return None


def headline(scores) -> float:
    """The one number epochs are compared by: accuracy (classify), F1 (tag, qa)."""
    return scores.accuracy if hasattr(scores, "accuracy") else scores.f1


def score_summary(scores) -> dict:
    """The scores as a small dict for results.json."""
    if hasattr(scores, "exact_match"):
        return {"exact_match": scores.exact_match, "f1": scores.f1, "n": scores.n}
    if hasattr(scores, "accuracy"):
        return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "f1": scores.positive_f1, "n": scores.n}
    return {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1, "sentences": scores.sentences}
