"""Fine-tuning objectives: a label per text (or text pair), or a tag per word.

    sequence   ("a gripping film", None, 1)            -> ids [CLS] a gripping film [SEP], target 1
    tokens     (["John", "lives", "in", "Berlin"], [B-PER, O, O, B-LOC])
               -> [CLS] john lives in berlin [SEP]; each word's first piece carries its tag,
                  its other pieces and the specials are IGNORE_INDEX (as BERT's NER, section 5.3)

Both are cross-entropy on the task head's logits; nothing here knows the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.inputs import encode_pieces, encode_texts, pad_rows
from .base import IGNORE_INDEX, Batch, logits_of, token_cross_entropy

SequenceExample = tuple[str, "str | None", int]  # (text, second text or None, label id)
TaggedExample = tuple[Sequence[str], Sequence[int]]  # (words, tag id per word)


def _inputs(encoded) -> dict[str, torch.Tensor]:
    inputs = {"ids": encoded.ids, "attention_mask": encoded.attention_mask}
    if encoded.token_type_ids is not None:
        inputs["token_type_ids"] = encoded.token_type_ids
    return inputs


class SequenceClassificationObjective:
    def __init__(self, tokenizer, max_len: int, label_smoothing: float = 0.0):
        self.tokenizer, self.max_len, self.label_smoothing = tokenizer, max_len, label_smoothing

    def prepare(self, examples: Sequence[SequenceExample]) -> Batch:
        texts = [e[0] for e in examples]
        pairs = [e[1] for e in examples]
        has_pairs = any(p is not None for p in pairs)
        encoded = encode_texts(self.tokenizer, texts, self.max_len,
                               texts_b=[p or "" for p in pairs] if has_pairs else None)
        return Batch(_inputs(encoded), torch.tensor([e[2] for e in examples], dtype=torch.long),
                     {"n_tokens": int(encoded.attention_mask.sum())})

    def loss(self, output, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits_of(output).float(), batch.targets, label_smoothing=self.label_smoothing)


class TokenClassificationObjective:
    def __init__(self, tokenizer, max_len: int, label_smoothing: float = 0.0):
        self.tokenizer, self.max_len, self.label_smoothing = tokenizer, max_len, label_smoothing

    def word_pieces(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids of each word as it appears in running text (byte-level BPE marks a word
        that follows a space, so every word but the first gets one)."""
        spaced = [w if i == 0 or self.tokenizer.kind != "bpe" else " " + w for i, w in enumerate(words)]
        return self.tokenizer.encode_batch(spaced) if spaced else []

    def prepare(self, examples: Sequence[TaggedExample]) -> Batch:
        rows, targets = [], []
        cls = self.tokenizer.special_ids.get("cls")
        for words, tags in examples:
            if len(words) != len(tags):
                raise ValueError(f"{len(words)} words but {len(tags)} tags in one example")
            ids, labels = [], []
            for pieces, tag in zip(self.word_pieces(words), tags):
                ids += pieces
                labels += [tag] + [IGNORE_INDEX] * (len(pieces) - 1)
            row, types = encode_pieces(self.tokenizer, ids, None, self.max_len)
            body = len(row) - (cls is not None) - (self.tokenizer.special_ids.get("sep") is not None)
            labels = ([IGNORE_INDEX] if cls is not None else []) + labels[:body]
            targets.append(labels + [IGNORE_INDEX] * (len(row) - len(labels)))
            rows.append((row, types))
        encoded = pad_rows(rows, self.tokenizer.pad_id, with_types=self.tokenizer.special_ids.get("sep") is not None)
        width = encoded.ids.shape[1]
        target = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, t in enumerate(targets):
            target[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        return Batch(_inputs(encoded), target, {"n_tokens": int(encoded.attention_mask.sum())})

    def loss(self, output, batch: Batch) -> torch.Tensor:
        return token_cross_entropy(output, batch.targets, self.label_smoothing)


def word_predictions(logits: torch.Tensor, batch: Batch) -> list[list[int]]:
    """The predicted tag of each word: the argmax at the positions that carry a target."""
    best = logits.argmax(-1)  # (B, T)
    keep = batch.targets != IGNORE_INDEX
    return [best[i][keep[i]].tolist() for i in range(best.shape[0])]
