"""Beam search on the shared decoding state (any architecture: for an encoder-decoder model
the prompts are the sources, encoded once).

Every sentence keeps ``beam_size`` running hypotheses in the batch (B x K rows). Each step
scores all K x V one-token extensions by their summed log-probability, keeps the best 2K
per sentence, sets aside those that end (with an end token) as finished, and continues
the best K others; the KV cache rows follow their parents (``reorder``). A finished
hypothesis is ranked by ``logprob / length ** length_penalty`` (length counts the end
token), so ``length_penalty`` > 0 stops short outputs from winning just by being short.

With ``early_stopping`` a sentence is done once it has K finished hypotheses (fairseq's
rule); otherwise it goes on while a running hypothesis could still beat the worst finished
one. Each hypothesis carries Steps (token, the model's probability, the top alternatives),
as sampling does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .decode import Step, start


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, the end token excluded
    logprob: float  # summed log-probability, the end token included
    score: float  # logprob / length ** length_penalty
    steps: list[Step] = field(default_factory=list)
    finished: bool = True  # False when max_new_tokens ran out first


@dataclass
class _Beam:
    tokens: list[int]
    steps: list[Step]


@torch.inference_mode()
def beam_search(model: nn.Module, prompts: Sequence[Sequence[int]], beam_size: int = 4, max_new_tokens: int = 64,
                stop_token_ids: Sequence[int] = (), length_penalty: float = 1.0, early_stopping: bool = True,
                top_alternatives: int = 5, n_best: int = 1) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses of each prompt, best first."""
    if beam_size <= 0:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    if not 0 < n_best <= beam_size:
        raise ValueError(f"n_best must be in 1..beam_size ({beam_size}), got {n_best}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not stop_token_ids:
        raise ValueError("beam search needs an end token (stop_token_ids) to finish hypotheses")
    n, k = len(prompts), beam_size
    state = start(model, [p for p in prompts for _ in range(k)], max_new_tokens)  # rows: prompt-major (n * k)
    device = state.logits.device
    stops = set(stop_token_ids)
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at first all K rows are the same prefix: extend only one
    beams = [[_Beam([], []) for _ in range(k)] for _ in range(n)]
    finished: list[list[Hypothesis]] = [[] for _ in range(n)]
    done = [False] * n
    logits = state.logits
    for index in range(max_new_tokens):
        logprobs = logits.log_softmax(-1)  # (n * k, V)
        vocab = logprobs.shape[-1]
        total = (scores[:, :, None] + logprobs.view(n, k, vocab)).view(n, k * vocab)  # (n, k * V)
        top_scores, top_ids = total.topk(min(2 * k, k * vocab), dim=-1)  # (n, 2k)
        alts = _alternatives(logprobs, top_alternatives)  # per row: [(token, prob), ...]
        row_scores = scores.view(-1).tolist()
        parents = torch.arange(n * k, device=device).view(n, k).clone()  # default: rows stay put
        next_tokens = torch.zeros(n, k, dtype=torch.long, device=device)
        new_scores = torch.full((n, k), float("-inf"), device=device)
        new_beams = [list(b) for b in beams]
        cand_scores, cand_ids = top_scores.tolist(), top_ids.tolist()
        for i in range(n):
            if done[i]:
                continue
            kept = 0
            for rank, (score, flat) in enumerate(zip(cand_scores[i], cand_ids[i])):
                if score == float("-inf"):
                    break
                parent, token = divmod(flat, vocab)
                row = i * k + parent
                prob = math.exp(score - row_scores[row])  # the model's probability of this token
                step = Step(seq=i, index=index, token=token, prob=prob, alternatives=alts[row])
                beam = beams[i][parent]
                if token in stops:
                    if rank < k:  # only an extension that would have made the beam may finish
                        length = len(beam.tokens) + 1
                        finished[i].append(Hypothesis(list(beam.tokens), score, score / length ** length_penalty,
                                                      beam.steps + [step]))
                    continue
                parents[i, kept], next_tokens[i, kept], new_scores[i, kept] = row, token, score
                new_beams[i][kept] = _Beam(beam.tokens + [token], beam.steps + [step])
                kept += 1
                if kept == k:
                    break
            done[i] = _is_done(finished[i], new_scores[i].max().item(), index + 1, k, length_penalty, early_stopping)
        beams, scores = new_beams, new_scores
        if all(done) or index == max_new_tokens - 1:
            break
        rows = parents.view(-1)
        state.reorder(rows)
        logits = state.append(next_tokens.view(-1))
    results = []
    for i in range(n):
        pool = finished[i]
        if len(pool) < n_best:  # out of length: the best running hypotheses count too
            pool = pool + [Hypothesis(b.tokens, s, s / max(1, len(b.tokens)) ** length_penalty, b.steps, False)
                           for b, s in zip(beams[i], scores[i].tolist()) if s != float("-inf")]
        results.append(sorted(pool, key=lambda h: h.score, reverse=True)[:n_best])
    return results


def _is_done(finished: list[Hypothesis], best_running: float, length: int, k: int, length_penalty: float,
             early_stopping: bool) -> bool:
    """A sentence is done when it has K finished hypotheses and (unless early stopping) no
    running one could still beat the worst of them. Log-probabilities only fall as a
    hypothesis grows, so with a non-negative penalty the best it can reach is bounded by
    its current sum over the longest length it may yet have; we use its current length,
    the common heuristic (Hugging Face's)."""
    if len(finished) < k:
        return best_running == float("-inf")
    if early_stopping:
        return True
    worst = sorted(h.score for h in finished)[-k]
    return best_running / length ** length_penalty <= worst


def _alternatives(logprobs: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Each row's top-k (token, probability) pairs, most likely first (empty lists for k = 0)."""
    if not k:
        return [[] for _ in range(logprobs.shape[0])]
    top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return [list(zip(ids, ps)) for ids, ps in zip(top.indices.tolist(), top.values.exp().tolist())]
