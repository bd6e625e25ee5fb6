"""Translation: sentences in, sentences out, by beam search (or greedy with beam 1).

Sentences are sorted by length and decoded in batches, so a file of thousands of lines
runs at batch speed with little padding; results come back in the input order.
The source gets the end token appended, as ``Seq2SeqObjective`` (``source_eos``) trained it,
and the model's text-to-text task prefix (``extra["source_prefix"]``, T5 style) in front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from ..models.family import families_that, family_of
from . import prompts
from .beam import beam_search
from .step import Step


@dataclass
class Translation:
    source: str
    text: str
    score: float  # length-normalised log-probability of the output
    steps: list[Step] = field(default_factory=list)  # per-token probabilities and alternatives


def translate(model: nn.Module, tokenizer, sentences: Sequence[str], beam_size: int = 5,
              length_penalty: float = 1.0, max_len_a: float = 1.5, max_len_b: int = 10,
              batch_tokens: int = 6000, top_alternatives: int = 0, progress: bool = False) -> list[Translation]:
    """Translate every sentence; each output may have up to ``max_len_a * source tokens + max_len_b``
    tokens (within the model's context). ``batch_tokens`` bounds sentences x beam x source
    length per batch."""
    if not family_of(model.cfg).can("translate"):
        need = " or ".join(f.title for f in families_that("translate"))
        raise ValueError(f"translation needs an {need} model; this one is a {family_of(model.cfg)}")
    if tokenizer.eos_id is None:
        raise ValueError("the tokenizer has no end-of-sequence token to end translations with")
    sources = [prompts.encode(model.cfg, tokenizer, s) for s in sentences]  # task prefix + sentence + </s>
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[Translation | None] = [None] * len(sources)
    bar = _progress(len(sources)) if progress else None
    for batch in _batches(order, sources, beam_size, batch_tokens):
        longest = max(len(sources[i]) for i in batch)
        max_new = max(1, min(model.cfg.max_seq_len - 1, int(max_len_a * longest + max_len_b)))
        best = beam_search(model, [sources[i] for i in batch], beam_size=beam_size, max_new_tokens=max_new,
                           stop_token_ids=(tokenizer.eos_id,), length_penalty=length_penalty,
                           top_alternatives=top_alternatives)
        for i, (hyp,) in zip(batch, best):
            results[i] = Translation(sentences[i], tokenizer.decode(hyp.tokens), hyp.score,
                                     [s.named(tokenizer) for s in hyp.steps])
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]


def _batches(order: list[int], sources: list[list[int]], beam_size: int, budget: int) -> list[list[int]]:
    """Consecutive runs of ``order`` (sorted by length) whose sentences x beam x longest fits the budget."""
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * beam_size * len(sources[i]) > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _progress(total: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="translate", unit="sent", dynamic_ncols=True, mininterval=0.5)
