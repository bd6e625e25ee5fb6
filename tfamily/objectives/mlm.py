"""Masked-language modelling + next-sentence prediction: BERT's pretraining objective.

    row     [CLS] my dog is hairy [SEP] he likes play ##ing [SEP] [PAD]
    types     0    0   0   0   0    0    1    1     1    1     1     0
    ids     [CLS] my dog is [MASK] [SEP] he likes play ##ing [SEP] [PAD]   <- 15 % chosen
    targets  -100 -100 -100 -100 hairy -100 ...                            <- loss there only

Of the tokens that are not [CLS], [SEP] or [PAD], each is chosen with probability
``mask_prob`` (0.15); of the chosen, 80 % become [MASK], 10 % a random token of the
ordinary vocabulary (never a special), and 10 % stay as they are, so the model cannot
learn that only [MASK] positions matter (Devlin et al. 2019, section 3.1). With
``whole_word`` whole words are chosen instead (each word with probability ``mask_prob``,
so still 15 % of the tokens on average): "play ##ing" is masked together, as are the
characters of a Chinese word when the sentences were prepared with a segmenter
(`Tokenizer.encode_with_words`). The 80/10/10 choice is then made per token.

Next-sentence prediction labels follow Hugging Face's ``BertForPreTraining``:
0 = B is the continuation of A, 1 = B is a random sentence.

Every row of the raw batch carries its own seed (`SentencePairs.mask_seeds`), so which
tokens are masked is a pure function of the sampler's (seed, step): the same on a resumed
run, on every rank and micro-batch split, and for validation batches at every evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sentences import SentencePairs
from .base import IGNORE_INDEX, Batch

NSP_IS_NEXT, NSP_RANDOM = 0, 1


class MaskedLMObjective:
    def __init__(self, vocab_size: int, pad_id: int, cls_id: int, sep_id: int, mask_id: int,
                 special_ids: tuple[int, ...] = (), mask_prob: float = 0.15,
                 replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1), whole_word: bool = False,
                 nsp_weight: float = 1.0):
        """``special_ids``: further ids never drawn as random replacements (e.g. [UNK]).
        ``replace_probs``: shares of the chosen tokens that become [MASK] / a random token /
        stay. ``nsp_weight`` scales the NSP loss (0 turns it off)."""
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if len(replace_probs) != 3 or min(replace_probs) < 0 or abs(sum(replace_probs) - 1.0) > 1e-6:
            raise ValueError(f"replace_probs must be three shares ([MASK], random, unchanged) summing to 1, "
                             f"got {replace_probs}")
        for name, value in (("pad_id", pad_id), ("cls_id", cls_id), ("sep_id", sep_id), ("mask_id", mask_id)):
            if value is None or not 0 <= value < vocab_size:
                raise ValueError(f"{name} must be an id in [0, {vocab_size}), got {value!r}; "
                                 "the tokenizer needs [PAD] [CLS] [SEP] [MASK] (use a wordpiece tokenizer)")
        self.vocab_size, self.pad_id, self.cls_id, self.sep_id, self.mask_id = vocab_size, pad_id, cls_id, sep_id, mask_id
        self.mask_prob, self.replace_probs, self.whole_word = mask_prob, tuple(replace_probs), whole_word
        self.nsp_weight = nsp_weight
        specials = {pad_id, cls_id, sep_id, mask_id, *special_ids}
        self.random_pool = np.setdiff1d(np.arange(vocab_size), np.fromiter(specials, dtype=np.int64))  # (V - S,)
        if len(self.random_pool) == 0:
            raise ValueError("the vocabulary has no ordinary tokens to draw random replacements from")

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "MaskedLMObjective":
        """Ids from a tokenizer's special-token roles; every special is kept out of the
        random replacements."""
        ids = tokenizer.special_ids
        missing = [role for role in ("pad", "cls", "sep", "mask") if role not in ids]
        if missing:
            raise ValueError(f"masked-LM pretraining needs the special tokens {', '.join(missing)} "
                             f"(a {tokenizer.kind} tokenizer has {sorted(ids)}); train a wordpiece tokenizer")
        return cls(tokenizer.vocab_size, ids["pad"], ids["cls"], ids["sep"], ids["mask"],
                   special_ids=tuple(ids.values()), **kwargs)

    # ------------------------------------------------------------------ prepare
    def prepare(self, raw: SentencePairs) -> Batch:
        """Sentence pairs -> inputs ids / attention_mask / token_type_ids (B, T), MLM
        targets (B, T), extra nsp_labels (B,) and n_tokens (real tokens)."""
        if len(raw) == 0:
            raise ValueError("a masked-LM batch needs at least one sentence pair")
        rows = [self._row(a, b, aw, bw, int(seed))
                for a, b, aw, bw, seed in zip(raw.a, raw.b, raw.a_words, raw.b_words, raw.mask_seeds)]
        width = max(len(r[0]) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)  # (B, T)
        types = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
        targets = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        lengths = np.array([len(r[0]) for r in rows])
        for i, (row_ids, row_types, row_targets) in enumerate(rows):
            ids[i, :len(row_ids)], types[i, :len(row_ids)], targets[i, :len(row_ids)] = row_ids, row_types, row_targets
        mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
        inputs = {"ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                  "token_type_ids": torch.from_numpy(types)}
        extra = {"nsp_labels": torch.as_tensor(np.asarray(raw.nsp_labels, dtype=np.int64)),
                 "n_tokens": int(lengths.sum())}
        return Batch(inputs, torch.from_numpy(targets), extra)

    def _row(self, a: np.ndarray, b: np.ndarray, a_words: np.ndarray, b_words: np.ndarray, seed: int):
        """One row [CLS] A [SEP] B [SEP] with its masking: ids, token types, targets (L,) each."""
        la, lb = len(a), len(b)
        ids = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]]).astype(np.int64)  # (L,)
        types = np.concatenate([np.zeros(la + 2, np.int64), np.ones(lb + 1, np.int64)])
        words = np.concatenate([[-1], a_words, [-1], b_words, [-1]]).astype(np.int64)  # -1: never masked
        masked_ids, targets = self.mask_tokens(ids, words if self.whole_word else None, np.random.default_rng(seed))
        return masked_ids, types, targets

    def mask_tokens(self, ids: np.ndarray, words: np.ndarray | None, rng: np.random.Generator):
        """Choose and replace tokens of one row: (L,) ids -> masked ids (L,), targets (L,).

        ``words`` (L,): word index of each token, -1 for positions that must never be
        chosen; None chooses token by token (the specials are still never chosen)."""
        maskable = ~np.isin(ids, (self.cls_id, self.sep_id, self.pad_id))  # (L,)
        if words is None:
            chosen = maskable & (rng.random(len(ids)) < self.mask_prob)
        else:
            maskable &= words >= 0
            n_words = int(words.max()) + 1 if maskable.any() else 0
            word_chosen = rng.random(max(n_words, 1)) < self.mask_prob  # (n_words,)
            chosen = maskable & word_chosen[np.where(words >= 0, words, 0)]
        u = rng.random(len(ids))  # (L,) which replacement each chosen token gets
        p_mask, p_random, _ = self.replace_probs
        to_mask = chosen & (u < p_mask)
        to_random = chosen & (u >= p_mask) & (u < p_mask + p_random)
        out = ids.copy()
        out[to_mask] = self.mask_id
        out[to_random] = self.random_pool[rng.integers(len(self.random_pool), size=int(to_random.sum()))]
        targets = np.where(chosen, ids, IGNORE_INDEX)
        return out, targets

    # ------------------------------------------------------------------ loss
    def loss(self, output: Any, batch: Batch) -> torch.Tensor:
        """MLM cross-entropy (fp32, mean over the masked tokens) plus, when the model gives
        next-sentence logits and the batch has labels, ``nsp_weight`` x NSP cross-entropy.
        output: a dataclass with ``.logits`` (B, T, V) and ``.nsp_logits`` (B, 2) or None,
        or bare logits."""
        logits = output if isinstance(output, torch.Tensor) else output.logits  # (B, T, V)
        targets = batch.targets  # (B, T)
        if (targets != IGNORE_INDEX).any():
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        else:
            loss = logits.float().sum() * 0.0  # nothing masked (a tiny batch): no signal, no NaN
        nsp_logits = getattr(output, "nsp_logits", None)  # (B, 2) or None
        labels = batch.extra.get("nsp_labels")
        if nsp_logits is not None and labels is not None and self.nsp_weight:
            loss = loss + self.nsp_weight * F.cross_entropy(nsp_logits.float(), labels.to(nsp_logits.device))
        return loss

    def __repr__(self) -> str:
        return (f"MaskedLMObjective(mask_prob={self.mask_prob}, replace_probs={self.replace_probs}, "
                f"whole_word={self.whole_word}, nsp_weight={self.nsp_weight})")
