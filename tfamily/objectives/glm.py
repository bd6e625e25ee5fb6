"""GLM's autoregressive blank infilling (Du et al. 2022, section 2.1), as a pure objective.

    text      x1 x2 x3 x4 x5 x6            spans sampled: (2, 1) = x3, (4, 2) = x5 x6
    Part A    x1 x2 [M] x4 [M]             each span replaced by ONE [MASK]
    Part B    [S] x5 x6 [S] x3             the spans in random order, each started by [S]
    targets   x5 x6 [E] x3 [E]             next token within Part B; IGNORE in Part A
    row 0      0  1  2  3  4 | 4  4  4  2  2   position in Part A (a span: its [MASK]'s)
    row 1      0  0  0  0  0 | 1  2  3  1  2   position inside the span

Span lengths are drawn from Poisson(``mean_span`` = 3) (a zero is drawn again) until
``mask_ratio`` (15 %) of the tokens are covered; the last span is cut so that exactly
ceil(15 % of the tokens) are. The spans are then placed at random without overlapping
(two may touch: "[MASK] [MASK]" is two blanks). With probability ``gmask_prob`` a row is
instead the gMASK variant: one span, a suffix of 50-100 % of the text (``gmask_min_frac``),
replaced by [gMASK] - the form plain left-to-right generation takes.

Which spans a row gets is a pure function of the seed its raw batch carries (`GLMRaw.seeds`,
drawn by `objectives.base.SeededWindows` from (seed, step)), so a resumed run masks exactly as
an unstopped one would, and validation batches are masked the same way at every evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..nn.positions import glm_row_limit, glm_row_positions  # noqa: F401 (glm_row_limit: the length its rows stay within)
from .base import IGNORE_INDEX, Batch, SeededRows, token_cross_entropy


GLMRaw = SeededRows  # GLM's raw batch: token windows (``ids``) and one masking seed per row


@dataclass
class GLMRow:
    """One example before padding: ids, positions (2, T), targets (T,), Part A length, spans."""

    ids: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    part_a_len: int
    spans: list[tuple[int, int]]  # (start, length) in the original text, in text order


class GLMObjective:
    defer_head = True  # the loss applies the LM head itself, to Part B's rows only (nn.loss)

    def __init__(self, mask_id: int, start_id: int, end_id: int, pad_id: int = 0, gmask_id: int | None = None,
                 mask_ratio: float = 0.15, mean_span: float = 3.0, gmask_prob: float = 0.0,
                 gmask_min_frac: float = 0.5, max_len: int | None = None):
        """``gmask_prob``: share of rows made the gMASK way (one long suffix span) instead of
        by blanks; ``max_len``: the model's context, so a row that would not fit is an error."""
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if mean_span <= 0:
            raise ValueError(f"mean_span must be positive, got {mean_span}")
        if not 0.0 <= gmask_prob <= 1.0:
            raise ValueError(f"gmask_prob must be in [0, 1], got {gmask_prob}")
        if not 0.0 < gmask_min_frac <= 1.0:
            raise ValueError(f"gmask_min_frac must be in (0, 1], got {gmask_min_frac}")
        if gmask_prob > 0 and gmask_id is None:
            raise ValueError("gmask_prob > 0 needs gmask_id (the tokenizer's [gMASK])")
        for name, value in (("mask_id", mask_id), ("start_id", start_id), ("end_id", end_id), ("pad_id", pad_id)):
            if value is None or value < 0:
                raise ValueError(f"{name} must be a token id, got {value!r}")
        self.mask_id, self.start_id, self.end_id, self.pad_id, self.gmask_id = mask_id, start_id, end_id, pad_id, gmask_id
        self.mask_ratio, self.mean_span = mask_ratio, mean_span
        self.gmask_prob, self.gmask_min_frac, self.max_len = gmask_prob, gmask_min_frac, max_len

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "GLMObjective":
        """Ids from the tokenizer's roles: [MASK], [S], [E], padding and (if present) [gMASK]."""
        ids = tokenizer.special_ids
        missing = [r for r in ("mask", "span_start", "span_end") if r not in ids]
        if kwargs.get("gmask_prob", 0) > 0 and "gmask" not in ids:
            missing.append("gmask")
        if missing:
            raise ValueError(f"GLM blank infilling needs the special tokens {', '.join(missing)} (the tokenizer has "
                             f"{sorted(ids)}); train one with special_tokens=GLM_SPECIAL_TOKENS")
        return cls(ids["mask"], ids["span_start"], ids["span_end"], ids.get("pad", 0), ids.get("gmask"), **kwargs)

    # ------------------------------------------------------------------ spans
    def span_lengths(self, n: int, rng: np.random.Generator) -> list[int]:
        """Poisson(mean_span) lengths (zeros drawn again) until ceil(mask_ratio * n) tokens are
        covered, the last one cut to make exactly that; at least one token stays in Part A."""
        target = min(max(1, math.ceil(self.mask_ratio * n)), n - 1)
        lengths: list[int] = []
        while sum(lengths) < target:
            length = 0
            while length == 0:
                length = int(rng.poisson(self.mean_span))
            lengths.append(min(length, target - sum(lengths)))
        return lengths

    def place_spans(self, n: int, lengths: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
        """Put the spans (in random order) among the n - covered other tokens, every
        arrangement equally likely: choose which of the (n - covered + k) items are spans."""
        k, free = len(lengths), n - sum(lengths)
        lengths = [lengths[i] for i in rng.permutation(k)]
        slots = np.sort(rng.choice(free + k, size=k, replace=False))  # item index of each span
        spans, covered = [], 0
        for i, (slot, length) in enumerate(zip(slots, lengths)):
            start = int(slot) - i + covered  # (free tokens before it) + (span tokens before it)
            spans.append((start, length))
            covered += length
        return spans

    def gmask_span(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """One suffix of 50-100 % of the text (at least one token stays as the prompt)."""
        low = min(max(1, math.ceil(self.gmask_min_frac * n)), n - 1)
        length = int(rng.integers(low, n))  # in [low, n - 1]
        return [(n - length, length)]

    # ------------------------------------------------------------------ one row
    def build_row(self, tokens: np.ndarray, spans: list[tuple[int, int]], rng: np.random.Generator,
                  blank_id: int | None = None) -> GLMRow:
        """Part A (text with each span as one ``blank_id``, [MASK] by default) then Part B (the
        spans in random order, [S] first), with 2-D positions and next-token targets."""
        blank_id = self.mask_id if blank_id is None else blank_id
        spans = sorted(spans)
        part_a: list[int] = []
        blank_at: list[int] = []  # Part A index of each span's blank
        cursor = 0
        for start, length in spans:
            part_a += tokens[cursor:start].tolist()
            blank_at.append(len(part_a))
            part_a.append(blank_id)
            cursor = start + length
        part_a += tokens[cursor:].tolist()
        la = len(part_a)
        ids, targets, part_b = list(part_a), [IGNORE_INDEX] * la, []
        for i in rng.permutation(len(spans)):
            start, length = spans[i]
            body = tokens[start:start + length].tolist()
            ids += [self.start_id] + body  # [S] x1 .. xl
            targets += body + [self.end_id]  # x1 .. xl [E]
            part_b.append((blank_at[i], length + 1))
        return GLMRow(np.asarray(ids, np.int64), glm_row_positions(la, part_b).numpy(),
                      np.asarray(targets, np.int64), la, spans)

    def make_row(self, tokens: np.ndarray, seed: int) -> GLMRow:
        """The row a seed gives: blanks, or (with probability gmask_prob) one gMASK suffix."""
        n = len(tokens)
        if n < 2:
            raise ValueError(f"GLM blank infilling needs rows of at least 2 tokens, got {n}")
        rng = np.random.default_rng(seed)
        if self.gmask_prob and rng.random() < self.gmask_prob:
            return self.build_row(tokens, self.gmask_span(n, rng), rng, self.gmask_id)
        return self.build_row(tokens, self.place_spans(n, self.span_lengths(n, rng), rng), rng)

    # ------------------------------------------------------------------ batch
    def prepare(self, raw: GLMRaw) -> Batch:
        """Raw windows with seeds -> inputs ids (B, T), positions (B, 2, T), part_a_len (B,),
        attention_mask (B, T) (rows are right-padded); targets (B, T); extra spans, n_tokens."""
        if not isinstance(raw, GLMRaw):
            raise TypeError(f"GLMObjective.prepare takes a GLMRaw (windows + per-row seeds; wrap the sampler in "
                            f"SeededWindows), got {type(raw).__name__}")
        if len(raw) == 0:
            raise ValueError("a GLM batch needs at least one row")
        windows = raw.ids.cpu().numpy()
        return self.collate([self.make_row(w, int(s)) for w, s in zip(windows, raw.seeds.tolist())])

    def collate(self, rows: list[GLMRow]) -> Batch:
        """Rows -> one right-padded Batch (see ``prepare``)."""
        width = max(len(r.ids) for r in rows)
        if self.max_len is not None and width > self.max_len:
            raise ValueError(f"a GLM row of {width} tokens (Part A + Part B) exceeds max_len={self.max_len}; "
                             "use shorter windows or a longer context")
        b = len(rows)
        ids = np.full((b, width), self.pad_id, np.int64)  # (B, T)
        positions = np.zeros((b, 2, width), np.int64)  # (B, 2, T)
        targets = np.full((b, width), IGNORE_INDEX, np.int64)  # (B, T)
        for i, r in enumerate(rows):
            t = len(r.ids)
            ids[i, :t], positions[i, :, :t], targets[i, :t] = r.ids, r.positions, r.targets
        lengths = np.array([len(r.ids) for r in rows])
        inputs = {"ids": torch.from_numpy(ids), "positions": torch.from_numpy(positions),
                  "part_a_len": torch.tensor([r.part_a_len for r in rows], dtype=torch.long),
                  "attention_mask": torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])}
        extra: dict[str, Any] = {"spans": [r.spans for r in rows], "n_tokens": int(lengths.sum())}
        return Batch(inputs, torch.from_numpy(targets), extra)

    def loss(self, output, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy in fp32 over Part B's targets (the spans and their [E])."""
        return token_cross_entropy(output, batch.targets)
