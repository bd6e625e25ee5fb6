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

``BeamSearch`` is the search one step at a time (the server's engine steps it between its
other work); ``beam_search`` runs it to the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .states import State, start
from .step import Step, top_alternatives


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


class BeamSearch:
    """Beam search over a State whose rows are ``n`` prompts x ``beam_size`` beams, prompt-major."""

    def __init__(self, state: State, n: int, beam_size: int = 4, max_new_tokens: int = 64,
                 stop_token_ids: Sequence[int] = (), length_penalty: float = 1.0, early_stopping: bool = True,
                 top_alternatives: int = 5, n_best: int = 1):
        check(beam_size, max_new_tokens, stop_token_ids, n_best)
        self.state, self.n, self.k = state, n, beam_size
        self.max_new_tokens, self.length_penalty, self.early_stopping = max_new_tokens, length_penalty, early_stopping
        self.stops, self.top_alternatives, self.n_best = set(stop_token_ids), top_alternatives, n_best
        device = state.logits.device
        self.scores = torch.full((n, beam_size), float("-inf"), device=device)
        self.scores[:, 0] = 0.0  # at first all K rows are the same prefix: extend only one
        self.beams = [[_Beam([], []) for _ in range(beam_size)] for _ in range(n)]
        self.finished: list[list[Hypothesis]] = [[] for _ in range(n)]
        self.done = [False] * n
        self.index = 0  # steps taken
        self.over = False

    def step(self) -> bool:
        """One step of every sentence; True once the search is over."""
        if self.over:
            return True
        n, k, state, device, index = self.n, self.k, self.state, self.scores.device, self.index
        logprobs = state.logits.log_softmax(-1)  # (n * k, V)
        vocab = logprobs.shape[-1]
        total = (self.scores[:, :, None] + logprobs.view(n, k, vocab)).view(n, k * vocab)  # (n, k * V)
        top_scores, top_ids = total.topk(min(2 * k, k * vocab), dim=-1)  # (n, 2k)
        alts = top_alternatives(logprobs, self.top_alternatives)  # per row: [(token, logprob), ...]
        parents = torch.arange(n * k, device=device).view(n, k).clone()  # default: rows stay put
        next_tokens = torch.zeros(n, k, dtype=torch.long, device=device)
        new_scores = torch.full((n, k), float("-inf"), device=device)
        new_beams = [list(b) for b in self.beams]
        cand_scores, cand_ids = top_scores.tolist(), top_ids.tolist()
        cand_lps = logprobs.view(n, k * vocab).gather(-1, top_ids).tolist()  # each extension's own log-probability
        for i in range(n):
            if self.done[i]:
                continue
            kept = 0
            for rank, (score, flat, lp) in enumerate(zip(cand_scores[i], cand_ids[i], cand_lps[i])):
                if score == float("-inf"):
                    break
                parent, token = divmod(flat, vocab)
                row = i * k + parent
                step = Step(token=token, logprob=lp, top=alts[row], seq=i, index=index)
                beam = self.beams[i][parent]
                if token in self.stops:
                    if rank < k:  # only an extension that would have made the beam may finish
                        length = len(beam.tokens) + 1
                        self.finished[i].append(Hypothesis(list(beam.tokens), score,
                                                           score / length ** self.length_penalty, beam.steps + [step]))
                    continue
                parents[i, kept], next_tokens[i, kept], new_scores[i, kept] = row, token, score
                new_beams[i][kept] = _Beam(beam.tokens + [token], beam.steps + [step])
                kept += 1
                if kept == k:
                    break
            self.done[i] = _is_done(self.finished[i], new_scores[i].max().item(), index + 1, k, self.length_penalty,
                                    self.early_stopping)
        self.beams, self.scores = new_beams, new_scores
        self.index += 1
        if all(self.done) or self.index == self.max_new_tokens:
            self.over = True
            return True
        state.reorder(parents.view(-1))
        state.append(next_tokens.view(-1))
        return False

    def results(self) -> list[list[Hypothesis]]:
        """The ``n_best`` hypotheses of each prompt, best first."""
        out = []
        for i in range(self.n):
            pool = self.finished[i]
            if len(pool) < self.n_best:  # out of length: the best running hypotheses count too
                pool = pool + [Hypothesis(b.tokens, s, s / max(1, len(b.tokens)) ** self.length_penalty, b.steps, False)
                               for b, s in zip(self.beams[i], self.scores[i].tolist()) if s != float("-inf")]
            out.append(sorted(pool, key=lambda h: h.score, reverse=True)[:self.n_best])
        return out


def check(beam_size: int, max_new_tokens: int, stop_token_ids: Sequence[int], n_best: int = 1) -> None:
    """A clear error naming the argument that cannot work."""
    if beam_size <= 0:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    if not 0 < n_best <= beam_size:
        raise ValueError(f"n_best must be in 1..beam_size ({beam_size}), got {n_best}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not stop_token_ids:
        raise ValueError("beam search needs an end token (stop_token_ids) to finish hypotheses")


@torch.inference_mode()
def beam_search(model: nn.Module, prompts: Sequence[Sequence[int]], beam_size: int = 4, max_new_tokens: int = 64,
                stop_token_ids: Sequence[int] = (), length_penalty: float = 1.0, early_stopping: bool = True,
                top_alternatives: int = 5, n_best: int = 1) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses of each prompt, best first."""
    check(beam_size, max_new_tokens, stop_token_ids, n_best)
    state = start(model, [p for p in prompts for _ in range(beam_size)], max_new_tokens)  # rows: prompt-major
    search = BeamSearch(state, len(prompts), beam_size, max_new_tokens, stop_token_ids, length_penalty,
                        early_stopping, top_alternatives, n_best)
    while not search.step():
        pass
    return search.results()


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
