"""Text in, text out: read prompts as the model's family does, run the decode generator, apply
stop strings (``stops.StopStrings``, the one matcher)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from torch import nn

from . import prompts as family_prompts
from .decode import SamplingParams, Step, decode
from .stops import StopStrings, cut_at_stop  # noqa: F401 (cut_at_stop: text's name for the matcher's cut)


@dataclass
class Generation:
    prompt: str
    text: str  # the generated continuation (stop string excluded)
    steps: list[Step] = field(default_factory=list)
    finish_reason: str | None = None


def with_eos(params: SamplingParams, tokenizer, cfg=None) -> SamplingParams:
    """The params, stopping where the family's outputs end (end-of-text; a GLM span's [E]) unless
    stop ids were given."""
    if params.stop_token_ids:
        return params
    ids = family_prompts.stop_ids(cfg, tokenizer) if cfg is not None else (
        () if tokenizer.eos_id is None else (tokenizer.eos_id,))
    return dataclasses.replace(params, stop_token_ids=ids) if ids else params


def stream(model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams | None = None,
           stop: Sequence[str] = ()) -> Iterator[list[Step]]:
    """The decode generator on text prompts, read as the model's family reads them
    (``prompts.encode``: a decoder continues the text, an encoder-decoder translates it, a GLM
    fills its blanks); yields the same per-step lists of Steps, each named by the tokenizer."""
    params = with_eos(params or SamplingParams(), tokenizer, model.cfg)
    encoded = [family_prompts.encode(model.cfg, tokenizer, p) for p in prompts]
    for steps in decode(model, encoded, params, StopStrings(stop).checker(tokenizer)):
        yield [s.named(tokenizer) for s in steps]


def generate(model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams | None = None,
             stop: Sequence[str] = (), on_step: Callable[[Step], None] | None = None) -> list[Generation]:
    """Complete every prompt; returns text, per-token Steps and why each stopped.

    ``on_step`` sees each Step as it is generated (to print a reply while it streams)."""
    params = with_eos(params or SamplingParams(), tokenizer, model.cfg)
    results = [Generation(prompt=p, text="") for p in prompts]
    for steps in stream(model, tokenizer, prompts, params, stop):
        for step in steps:
            if on_step is not None:
                on_step(step)
            results[step.seq].steps.append(step)
            if step.finished:
                results[step.seq].finish_reason = step.finish_reason
    stop_ids, matcher = set(params.stop_token_ids), StopStrings(stop)
    for r in results:
        ids = [s.token for s in r.steps if s.token not in stop_ids]
        r.text = matcher.cut(tokenizer.decode(ids))
    return results
