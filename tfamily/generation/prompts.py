"""A prompt as each family reads it, and where each family's output ends.

The registry says what a text prompt is (``family_of(cfg).prompt``):

    "continue"  the text goes on: its tokens (an empty prompt starts from the start token)
    "source"    the encoder's input: the model's task prefix + the text + the end token, as the
                translation objective trained it; the output is the decoder's
    "blanks"    GLM: the text with [MASK] / [gMASK] blanks, each one token of Part A; the output
                fills them in order. A text without a blank gets [gMASK] at its end (a continuation).

``encode`` turns a text (or token ids, taken as given) into what ``states.start`` takes, and
``stop_ids`` gives the tokens that end an output. ``generate``, ``translate``, ``infill`` and
the server all read prompts here, so the same text means the same thing everywhere.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..models.family import family_of
from .states import Prompt


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


def split_blanks(tokenizer, text: str) -> tuple[list[int], list[int], list[str], list[str]]:
    """(Part A ids, the blanks' Part A positions, their token strings, the text pieces around them)."""
    blanks = blank_tokens(tokenizer)
    pattern = "(" + "|".join(re.escape(b) for b in sorted(blanks, key=len, reverse=True)) + ")"
    parts = re.split(pattern, text)  # text, blank, text, blank, ..., text
    pieces, found = parts[0::2], parts[1::2]
    part_a, positions = [], []
    for i, piece in enumerate(pieces):
        part_a += tokenizer.encode(piece) if piece else []
        if i < len(found):
            positions.append(len(part_a))
            part_a.append(blanks[found[i]])
    return part_a, positions, found, pieces


def _start_token(tokenizer) -> list[int]:
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if start is None:
        raise ValueError("the prompt is empty and the tokenizer has no start token to begin from")
    return [start]


def encode(cfg, tokenizer, prompt: str | Sequence[int]) -> list[int] | Prompt:
    """``prompt`` (text, or token ids taken as given) as ``cfg``'s family reads it."""
    kind = family_of(cfg).prompt
    text = prompt if isinstance(prompt, str) else None
    if kind == "source":
        if text is None:
            return list(prompt)
        prefix = cfg.extra.get("source_prefix", "") if isinstance(cfg.extra, dict) else ""
        eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
        return tokenizer.encode(prefix + text)[:cfg.max_seq_len - len(eos)] + eos
    if kind == "blanks":
        blanks = blank_tokens(tokenizer)
        if text is not None:
            ids, positions, _, _ = split_blanks(tokenizer, text)
        else:
            ids = list(prompt)
            positions = [i for i, t in enumerate(ids) if t in blanks.values()]
        if not positions:  # plain text: generate a continuation, GLM's [gMASK] way
            positions = [len(ids)]
            special = tokenizer.special_ids
            ids = ids + [special["gmask"] if "gmask" in special else special["mask"]]
        return Prompt(ids, tuple(positions))
    ids = tokenizer.encode(text) if text is not None else list(prompt)
    return ids or _start_token(tokenizer)


def stop_ids(cfg, tokenizer) -> tuple[int, ...]:
    """The tokens that end an output of ``cfg``'s family: a GLM span's [E], else end-of-text."""
    if family_of(cfg).prompt == "blanks":
        return (tokenizer.special_ids["span_end"],)
    return () if tokenizer.eos_id is None else (tokenizer.eos_id,)
