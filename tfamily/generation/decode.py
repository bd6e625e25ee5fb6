"""The one decode generator, shared by the CLI, the server and the playground page.

    prompts ─ start: the family's decoding State (states.py) reads them (prefill, KV cache)
            ─ loop: logits of every running row ─ filters ─ pick a token ─ yield Steps
                    ─ end finished rows (stop token, stop string, length) and drop them
                    ─ append the picked tokens (the cache holds the rest)

Every Step carries the chosen token, its probability under the model, and the top
alternatives with theirs, so a caller can show the distribution behind each word.
The probabilities are the model's own (softmax of the raw logits); temperature, top-k and
top-p change which token is drawn, not what the model believed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from . import filters
from .states import (STATES, CausalState, GLMState, Prompt, Seq2SeqState, State, XLState, left_pad,  # noqa: F401
                     start, state_class)
from .step import Step, describe, top_alternatives  # noqa: F401 (the record and its routine, re-exported)


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    top_alternatives: int = 5  # how many alternatives each Step reports
    stop_token_ids: Sequence[int] = ()  # e.g. the end-of-text token

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.top_alternatives < 0:
            raise ValueError(f"top_alternatives must be >= 0, got {self.top_alternatives}")


def pick(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) fp32 logits -> (B,) chosen ids, through the one filter chain (``filters.chain``:
    repetition penalty, temperature, top-k, top-p); greedy takes the most likely token."""
    if filters.is_greedy(params.temperature):  # 0 = greedy; a tiny t would overflow to inf
        # the token the chain's greedy row keeps, without building that (B, V) row: a fill, a
        # scatter and a second pass over the logits, some 350 us a step over Qwen's 151,936
        return filters.most_likely(filters.penalised(logits, seen, params.repetition_penalty))
    filtered = filters.chain(logits, params.temperature, params.top_k, params.top_p, seen, params.repetition_penalty)
    return torch.multinomial(filtered.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def decode(model: nn.Module, prompts: Sequence, params: SamplingParams | None = None,
           should_stop: Callable[[int, list[int]], bool] | None = None, **options) -> Iterator[list[Step]]:
    """Yield, per decoding step, one Step for each sequence still running.

    ``should_stop(seq, generated_ids)`` lets a caller end a sequence early (stop strings);
    it is asked after each token. Sequences that finish stop being yielded (and decoded); the
    batch ends when all have finished or ``max_new_tokens`` is reached. A decoder-only model may
    generate past its context: when the cache is full it slides (``CausalState``). For an
    encoder-decoder model the prompts are source sentences and the steps are the target's; for
    a GLM each prompt is Part A and the steps fill its blanks (``Prompt.blanks``, else its last
    token), ``max_new_tokens`` per blank. ``options`` go to the State (``states.start``).
    """
    params = params or SamplingParams()
    yield from run(start(model, prompts, params.max_new_tokens, **options), params, should_stop)


def run(state: State, params: SamplingParams, should_stop: Callable[[int, list[int]], bool] | None = None,
        generator: torch.Generator | None = None) -> Iterator[list[Step]]:
    """The sampling loop over a State: pick, report, end rows, drop them, append. ``params``'
    max_new_tokens is the State's business (its budgets); the rest is applied here."""
    device = state.logits.device
    if generator is None and params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    seen = state.seen(state.cfg.vocab_size) if params.repetition_penalty != 1.0 else None
    generated: dict[int, list[int]] = {seq: [] for seq in state.rows}
    stop_ids = set(params.stop_token_ids)
    while state.rows:
        logits = state.logits
        chosen = pick(logits, params, seen, generator)  # (B,)
        steps = describe(logits, chosen, params.top_alternatives)
        going = []
        for row, step in enumerate(steps):
            step.seq, step.index, step.part = state.rows[row], state.produced[row], state.part[row]
            if step.token in stop_ids:
                reason, ended = "stop", state.end(row, "stop")
            else:
                generated[step.seq].append(step.token)
                if should_stop is not None and should_stop(step.seq, generated[step.seq]):
                    reason, ended = "stop", True
                    state.finish(row)
                elif state.at_limit(row):
                    reason, ended = "length", state.end(row, "length")
                else:
                    ended = False
            if ended:
                step.finished, step.finish_reason = True, reason
            else:
                going.append(row)
        yield steps
        if not going:
            return
        if len(going) < len(steps):  # finished rows leave the batch
            state.reorder(going)
            index = torch.as_tensor(going, device=device)
            chosen = chosen[index]
            seen = seen[index] if seen is not None else None
        if seen is not None:
            seen[torch.arange(len(going), device=device), chosen] = True
        state.append(chosen)
