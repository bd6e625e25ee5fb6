"""Fill the blanks of a text with a GLM: "1 2 [MASK] 4 [MASK] [MASK]" -> "1 2 3 4 5 6".

    text ─ split at [MASK] / [gMASK] ─ Part A ids (each blank one token)
         ─ prefill Part A once (bidirectional, KV cache)
         ─ for each blank, left to right:  feed [S] at (blank's position, 1), then pick a
           token, feed it at (blank's position, 2, 3, ...) ... until [E] or the token budget
         ─ the text with every blank replaced by its span, and a Step per token

The spans stay in the cache, so a later blank sees the earlier blanks' fillings, as Part B
does in training (there in random order). Each Step has the chosen token's probability
under the model and the top alternatives, as everywhere in generation; [E] gets a Step too
(how sure the model was that the span was over) but is not part of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .decode import SamplingParams, Step, _steps, pick


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


def blank_tokens(tokenizer) -> dict[str, int]:
    """Token string -> id of the blanks this tokenizer has ([MASK], [gMASK])."""
    ids = tokenizer.special_ids
    for role in ("span_start", "span_end"):
        if role not in ids:
            raise ValueError(f"infilling needs the tokenizer's {role} token ([S] / [E]); it has {sorted(ids)}")
    blanks = {tokenizer.id_to_token(ids[r]): ids[r] for r in ("mask", "gmask") if r in ids}
    if not blanks:
        raise ValueError("infilling needs a [MASK] or [gMASK] token in the tokenizer; it has none")
    return blanks


def parse(tokenizer, text: str) -> tuple[list[int], list[Blank], list[str]]:
    """Part A ids, the blanks (with their Part A positions) and the text pieces around them."""
    blanks = blank_tokens(tokenizer)
    pattern = "(" + "|".join(re.escape(b) for b in sorted(blanks, key=len, reverse=True)) + ")"
    parts = re.split(pattern, text)  # text, blank, text, blank, ..., text
    pieces, found, part_a = parts[0::2], parts[1::2], []
    if not found:
        raise ValueError(f"no blank in the text: mark what to fill with {' or '.join(blanks)}")
    out = []
    for i, piece in enumerate(pieces):
        part_a += tokenizer.encode(piece) if piece else []
        if i < len(found):
            out.append(Blank(index=i, kind=found[i], position=len(part_a)))
            part_a.append(blanks[found[i]])
    return part_a, out, pieces


@torch.inference_mode()
def infill(model: nn.Module, tokenizer, text: str, params: SamplingParams | None = None) -> InfillResult:
    """Fill every [MASK] / [gMASK] of ``text``; ``params.max_new_tokens`` caps each blank
    (fewer when the model's context cannot hold that many for every blank)."""
    params = params or SamplingParams(max_new_tokens=32, temperature=0.0)
    cfg = model.cfg
    if cfg.arch != "glm":
        raise ValueError(f"infilling needs a GLM (arch='glm'), not arch={cfg.arch!r}")
    part_a, blanks, pieces = parse(tokenizer, text)
    start_id, end_id = tokenizer.special_ids["span_start"], tokenizer.special_ids["span_end"]
    room = (cfg.max_seq_len - len(part_a)) // len(blanks) - 1  # tokens per blank besides its [S]
    if room < 1:
        raise ValueError(f"the text is {len(part_a)} tokens with {len(blanks)} blanks; the model's context "
                         f"(max_seq_len={cfg.max_seq_len}) leaves no room to fill them")
    budget = min(params.max_new_tokens, room)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    cache = model.make_cache(1, len(part_a) + len(blanks) * (1 + budget))
    ids = torch.tensor([part_a], device=device)  # (1, La)
    model(ids, cache=cache, last_only=True)  # Part A: every token sees every other
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(1, cfg.vocab_size, dtype=torch.bool, device=device)
        seen[0, ids[0]] = True
    stop = {end_id, *params.stop_token_ids}
    part_a_len = torch.tensor([len(part_a)], device=device)

    def feed(token: int, blank: Blank, inner: int) -> torch.Tensor:  # -> next logits (1, V) fp32
        positions = torch.tensor([[[blank.position], [inner]]], device=device)  # (1, 2, 1)
        out = model(torch.tensor([[token]], device=device), positions=positions, part_a_len=part_a_len,
                    cache=cache, last_only=True)
        return out.logits[:, -1].float()

    for blank in blanks:
        logits = feed(start_id, blank, 1)
        for i in range(budget):
            chosen = pick(logits, params, seen, generator)  # (1,)
            (step,) = _steps(i, chosen, logits.log_softmax(-1), params.top_alternatives, [True])
            step.seq = blank.index
            blank.steps.append(step)
            if step.token in stop or i == budget - 1:
                step.finished, blank.finish_reason = True, "stop" if step.token in stop else "length"
                step.finish_reason = blank.finish_reason
            if step.token in stop:
                break
            blank.tokens.append(step.token)
            if seen is not None:
                seen[0, step.token] = True
            logits = feed(step.token, blank, i + 2)  # later blanks see this span, as in training
        blank.text = tokenizer.decode(blank.tokens)
    filled = "".join(piece + (blanks[i].text if i < len(blanks) else "") for i, piece in enumerate(pieces))
    return InfillResult(filled, blanks)
