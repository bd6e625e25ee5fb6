"""Extractive question answering (BERT, section 4.2): point at the answer inside the context.

    [CLS] question [SEP] context [SEP]   ->  start / end logits per token (B, T, 2)
    targets: the answer's first and last token, (B, 2); 0 ([CLS]) when the answer was cut
    off by the length limit, so the model learns "not in this window" there.

The loss is the mean of the start and end cross-entropies. Character offsets of the
context's tokens come from the tokenizer, so a predicted span maps back to the exact text.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.inputs import encode_pieces, pad_rows
from ..data.qa import QAExample  # noqa: F401 (the example a span objective reads; data's, as it should be)
from .base import Batch, logits_of


class SpanObjective:
    def __init__(self, tokenizer, max_len: int):
        if tokenizer.special_ids.get("sep") is None:
            raise ValueError("question answering needs a tokenizer with [SEP] to join question and context")
        self.tokenizer, self.max_len = tokenizer, max_len

    def encode(self, example: QAExample) -> tuple[list[int], list[int], list[tuple[int, int] | None]]:
        """(ids, segment ids, character span in the context of each token or None)."""
        question = self.tokenizer.encode(example.question)
        enc = self.tokenizer.backend.encode(example.context, add_special_tokens=False)
        ids, types = encode_pieces(self.tokenizer, question, list(enc.ids), self.max_len)
        start = len(ids) - types.count(1)  # first token of the context part (its [SEP] ends it)
        kept = len(ids) - 1 - start
        spans: list[tuple[int, int] | None] = [None] * len(ids)
        for i in range(kept):
            spans[start + i] = tuple(enc.offsets[i])
        return ids, types, spans

    def targets(self, example: QAExample, spans: list[tuple[int, int] | None]) -> tuple[int, int]:
        if not example.answers:
            return 0, 0
        answer = example.answers[0]
        begin = example.answer_start if example.answer_start is not None else example.context.find(answer)
        if begin < 0:
            raise ValueError(f"answer {answer!r} is not in its context")
        end = begin + len(answer)
        first = last = None
        for i, span in enumerate(spans):
            if span is None:
                continue
            if first is None and span[1] > begin:
                first = i
            if span[0] < end:
                last = i
        if first is None or last is None or last < first:
            return 0, 0  # the answer lies beyond the length limit
        return first, last

    def prepare(self, examples: Sequence[QAExample]) -> Batch:
        rows, targets, spans = [], [], []
        for ex in examples:
            ids, types, token_spans = self.encode(ex)
            rows.append((ids, types))
            targets.append(self.targets(ex, token_spans))
            spans.append(token_spans)
        encoded = pad_rows(rows, self.tokenizer.pad_id, with_types=True)
        inputs = {"ids": encoded.ids, "attention_mask": encoded.attention_mask,
                  "token_type_ids": encoded.token_type_ids}
        return Batch(inputs, torch.tensor(targets, dtype=torch.long),
                     {"n_tokens": int(encoded.attention_mask.sum()), "spans": spans})

    def loss(self, output, batch: Batch) -> torch.Tensor:
        logits = logits_of(output).float()  # (B, T, 2)
        start = F.cross_entropy(logits[..., 0], batch.targets[:, 0])
        end = F.cross_entropy(logits[..., 1], batch.targets[:, 1])
        return (start + end) / 2


def best_spans(logits: torch.Tensor, spans: list[list[tuple[int, int] | None]], max_answer_tokens: int = 30
               ) -> list[tuple[int, int] | None]:
    """For each row, the (first, last) token of the highest start + end score with first <= last,
    both inside the context and at most ``max_answer_tokens`` apart; None if the context is empty."""
    out = []
    for row, row_spans in zip(logits.float(), spans):
        inside = torch.tensor([s is not None for s in row_spans] + [False] * (row.shape[0] - len(row_spans)))
        if not inside.any():
            out.append(None)
            continue
        start = row[:, 0].masked_fill(~inside, float("-inf"))
        end = row[:, 1].masked_fill(~inside, float("-inf"))
        scores = start[:, None] + end[None, :]  # (T, T): start i, end j
        t = scores.shape[0]
        allowed = torch.ones(t, t, dtype=torch.bool).triu().tril(max_answer_tokens - 1)
        best = scores.masked_fill(~allowed, float("-inf")).argmax()
        out.append((int(best // t), int(best % t)))
    return out
