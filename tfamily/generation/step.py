"""The one per-token record of generation, and the one routine that fills it.

Every family's decoding, sampled or beam-searched, in the CLI, the library or the server,
reports each chosen token as a Step: the token, the model's log-probability of it, and the
most likely alternatives with theirs. The server names them (``text``) for its clients and
turns them into OpenAI's logprobs; the terminal views read ``prob`` and ``alternatives``.

The probabilities are the model's own (log_softmax of the raw logits): temperature, top-k
and top-p change which token is drawn, not what the model believed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass
class Step:
    token: int
    logprob: float  # the model's log-probability of this token
    top: list[tuple[int, float]] = field(default_factory=list)  # (token, logprob), most likely first
    seq: int = 0  # which prompt of the batch
    index: int = 0  # 0 for the first generated token (of its part: a GLM restarts at each blank)
    part: int = 0  # which output of its row: a GLM fills its blanks one after another (0, 1, ...)
    finished: bool = False  # True on a sequence's last step
    finish_reason: str | None = None  # "stop" (stop token / stop string) or "length"
    text: str | None = None  # the token as a person reads it, once ``named`` by a tokenizer
    top_text: list[str] | None = None  # likewise for the alternatives

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def alternatives(self) -> list[tuple[int, float]]:
        """(token, probability) of the top alternatives, most likely first."""
        return [(t, math.exp(lp)) for t, lp in self.top]

    def named(self, tokenizer) -> "Step":
        """Fill ``text`` and ``top_text`` from ``tokenizer`` (in place; returns the Step)."""
        self.text = tokenizer.token_text(self.token)
        self.top_text = [tokenizer.token_text(t) for t, _ in self.top]
        return self


def top_alternatives(logprobs: torch.Tensor, k: int | Sequence[int]) -> list[list[tuple[int, float]]]:
    """Each row's top-k (token, logprob) pairs of (B, V) log-probabilities, most likely first.
    ``k`` is one number or one per row (the rows' own requests); 0 gives empty lists."""
    ks = [k] * logprobs.shape[0] if isinstance(k, int) else list(k)
    most = min(max(ks, default=0), logprobs.shape[-1])
    if most <= 0:
        return [[] for _ in ks]
    top = logprobs.topk(most, dim=-1)
    ids, lps = top.indices.tolist(), top.values.tolist()
    return [list(zip(i[:n], lp[:n])) for i, lp, n in zip(ids, lps, ks)]


def describe(logits: torch.Tensor, chosen: torch.Tensor, k: int | Sequence[int]) -> list[Step]:
    """One Step per row of (B, V) fp32 logits: the chosen token's (B,) log-probability and the
    row's top-k alternatives. ``seq`` and ``index`` are the caller's to set."""
    logprobs = logits.log_softmax(-1)  # the model's own distribution
    chosen_lp = logprobs.gather(-1, chosen[:, None]).squeeze(-1).tolist()
    alts = top_alternatives(logprobs, k)
    return [Step(token=t, logprob=lp, top=a) for t, lp, a in zip(chosen.tolist(), chosen_lp, alts)]
