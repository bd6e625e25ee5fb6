"""Text in, text out: tokenise prompts, run the decode generator, apply stop strings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from torch import nn

from .decode import SamplingParams, Step, decode


@dataclass
class Generation:
    prompt: str
    text: str  # the generated continuation (stop string excluded)
    steps: list[Step] = field(default_factory=list)
    finish_reason: str | None = None


def _stop_checker(tokenizer, stop: Sequence[str]):
    """should_stop(seq, ids): True once the decoded continuation contains a stop string."""
    if not stop:
        return None
    if any(not s for s in stop):
        raise ValueError("stop strings must be non-empty")
    # A stop string that completes at this step lies within the last 4 * len tokens (every
    # token carries at least one byte, a character at most four), so only that tail is
    # decoded: the check stays constant-time per step however long the generation runs.
    tail = 4 * max(len(s) for s in stop)
    return lambda seq, ids: any(s in tokenizer.decode(ids[-tail:]) for s in stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def with_eos(params: SamplingParams, tokenizer) -> SamplingParams:
    """The params, stopping at the tokenizer's end-of-text token unless stop ids were given."""
    if params.stop_token_ids or tokenizer.eos_id is None:
        return params
    return dataclasses.replace(params, stop_token_ids=(tokenizer.eos_id,))


def stream(model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams | None = None,
           stop: Sequence[str] = ()) -> Iterator[list[Step]]:
    """The decode generator on text prompts; yields the same per-step lists of Steps."""
    params = with_eos(params or SamplingParams(), tokenizer)
    encoded = [tokenizer.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            if tokenizer.bos_id is None and tokenizer.eos_id is None:
                raise ValueError(f"prompt {i} is empty and the tokenizer has no start token to begin from")
            encoded[i] = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]
    yield from decode(model, encoded, params, _stop_checker(tokenizer, stop))


def generate(model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams | None = None,
             stop: Sequence[str] = (), on_step: Callable[[Step], None] | None = None) -> list[Generation]:
    """Complete every prompt; returns text, per-token Steps and why each stopped.

    ``on_step`` sees each Step as it is generated (to print a reply while it streams)."""
    params = with_eos(params or SamplingParams(), tokenizer)
    results = [Generation(prompt=p, text="") for p in prompts]
    for steps in stream(model, tokenizer, prompts, params, stop):
        for step in steps:
            if on_step is not None:
                on_step(step)
            results[step.seq].steps.append(step)
            if step.finished:
                results[step.seq].finish_reason = step.finish_reason
    stop_ids = set(params.stop_token_ids)
    for r in results:
        ids = [s.token for s in r.steps if s.token not in stop_ids]
        r.text = cut_at_stop(tokenizer.decode(ids), stop)
    return results
