"""Fill the blanks of a text with a GLM: "1 2 [MASK] 4 [MASK] [MASK]" -> "1 2 3 4 5 6".

    text ─ split at [MASK] / [gMASK] ─ Part A ids (each blank one token)   (prompts.split_blanks)
         ─ the GLM's decoding State (states.GLMState): Part A read once (bidirectional, KV cache),
           then each blank in turn, left to right: [S] at (blank's position, 1), a token at
           (blank's position, 2, 3, ...) ... until [E] or the token budget
         ─ the text with every blank replaced by its span, and a Step per token

This is ``decode`` on a Prompt with blanks, like any generation: the spans stay in the cache,
so a later blank sees the earlier blanks' fillings, as Part B does in training (there in
random order). Each Step has the chosen token's probability under the model and the top
alternatives, as everywhere in generation; [E] gets a Step too (how sure the model was that
the span was over) but is not part of the text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.family import families_that, family_of
from .decode import SamplingParams, Step, decode
from .prompts import blank_tokens, split_blanks  # noqa: F401 (blank_tokens: infill's name, kept)
from .states import Prompt


@dataclass
class Blank:
    index: int  # which blank, counted in text order from 0
    kind: str  # the blank's token string: "[MASK]" or "[gMASK]"
    position: int  # its position in Part A
    tokens: list[int] = field(default_factory=list)  # the filling, [E] excluded
    text: str = ""
    steps: list[Step] = field(default_factory=list)  # one per chosen token, [E] included
    finish_reason: str | None = None  # "stop" ([E] or a stop token) or "length"


@dataclass
class InfillResult:
    text: str  # the input with each blank replaced by its filling
    blanks: list[Blank]


def parse(tokenizer, text: str) -> tuple[list[int], list[Blank], list[str]]:
    """Part A ids, the blanks (with their Part A positions) and the text pieces around them."""
    part_a, positions, kinds, pieces = split_blanks(tokenizer, text)
    if not positions:
        raise ValueError(f"no blank in the text: mark what to fill with {' or '.join(blank_tokens(tokenizer))}")
    return part_a, [Blank(index=i, kind=k, position=p) for i, (k, p) in enumerate(zip(kinds, positions))], pieces


@torch.inference_mode()
def infill(model: nn.Module, tokenizer, text: str, params: SamplingParams | None = None) -> InfillResult:
    """Fill every [MASK] / [gMASK] of ``text``; ``params.max_new_tokens`` caps each blank
    (fewer when the model's context cannot hold that many for every blank)."""
    params = params or SamplingParams(max_new_tokens=32, temperature=0.0)
    cfg = model.cfg
    if not family_of(cfg).can("infill"):
        need = " or ".join(f"arch={f.name!r}" for f in families_that("infill"))
        raise ValueError(f"infilling needs a model that fills blanks ({need}), not arch={family_of(cfg).name!r}")
    part_a, blanks, pieces = parse(tokenizer, text)
    end_id = tokenizer.special_ids["span_end"]
    room = (cfg.max_seq_len - len(part_a)) // len(blanks) - 1  # tokens per blank besides its [S]
    if room < 1:
        raise ValueError(f"the text is {len(part_a)} tokens with {len(blanks)} blanks; the model's context "
                         f"(max_seq_len={cfg.max_seq_len}) leaves no room to fill them")
    budget = min(params.max_new_tokens, room)
    stop = (end_id, *(t for t in params.stop_token_ids if t != end_id))
    run = dataclasses.replace(params, max_new_tokens=budget, stop_token_ids=stop)
    prompt = Prompt(part_a, tuple(b.position for b in blanks))
    for steps in decode(model, [prompt], run):
        for step in steps:
            blank = blanks[step.part]
            step.seq = blank.index
            blank.steps.append(step.named(tokenizer))
            if step.token in stop:
                blank.finish_reason = "stop"
            else:
                blank.tokens.append(step.token)
                if len(blank.steps) == budget:
                    blank.finish_reason = "length"
            if blank.finish_reason:  # the blank's last step
                step.finished, step.finish_reason = True, blank.finish_reason
    for blank in blanks:
        blank.text = tokenizer.decode(blank.tokens)
    filled = "".join(piece + (blanks[i].text if i < len(blanks) else "") for i, piece in enumerate(pieces))
    return InfillResult(filled, blanks)
