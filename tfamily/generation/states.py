"""The decoding protocol: one State per way of decoding, looked up through the family registry.

A State holds a batch of rows being decoded (one per prompt, or per beam) and knows

    start      State(model, prompts, max_new_tokens, cache=None): read the prompts, ``logits`` ready
    append     append(chosen): feed each row's chosen token (B,), get the next ``logits`` (B, V) fp32
    reorder    reorder(rows): continue from those rows, in that order (beam search; dropping finished rows)
    finished   at_limit(row) / end(row, reason) / finish(row) / ``finished``: whether a row is done

and keeps, per row, which prompt it continues (``rows``), how many tokens its current output has
(``produced``) within its budget, and which output that is (``part``: a GLM fills its blanks
one after another). Everything that picks tokens (``decode``'s sampling, beam search, infilling,
the server's engine) is a loop over this protocol, so every family it knows is decoded, served
and inspected the same way:

    state = start(model, prompts, max_new_tokens)
    while rows remain:  chosen = pick(state.logits)  ─  Steps  ─  end / finish rows
                        ─  state.reorder(rows still going)  ─  state.append(chosen)

``STATES`` maps the registry's decoding kind (``family_of(cfg).decoding``) to its State. The
``cache`` argument lets a caller own the memory: the server's engine gives ``CausalState`` one
``SlotCache`` for all its requests and adds rows to it as they arrive (``CausalState.add``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..models.family import family_of
from ..nn.positions import glm_in_span, glm_part_a, positions_from_mask
from .slots import SlotCache


@dataclass
class Prompt:
    """Prompt ids with what a family needs besides them: a GLM's blanks (Part A positions of
    the tokens to fill, in order; none: the last token is the blank)."""
    ids: list[int]
    blanks: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


def ids_of(prompt: Sequence[int] | Prompt) -> list[int]:
    return list(prompt.ids) if isinstance(prompt, Prompt) else list(prompt)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths -> ids (B, T) and mask (B, T), padded on the left so that
    every sequence's next token is written at the same cache slot."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = True
    return ids.to(device), mask.to(device)


def _budgets(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != n or any(b <= 0 for b in budgets):
        raise ValueError(f"max_new_tokens must be positive, one number or one per prompt; got {max_new_tokens}")
    return budgets


def _seen(prompts: list[list[int]], vocab_size: int, device) -> torch.Tensor:
    """(B, V) bool: the tokens of each row's prompt, for the repetition penalty."""
    seen = torch.zeros(len(prompts), vocab_size, dtype=torch.bool, device=device)
    for row, ids in enumerate(prompts):
        seen[row, torch.as_tensor(ids, dtype=torch.long, device=device)] = True
    return seen


class State(ABC):
    """What every State keeps per row, and the protocol's bookkeeping (see the module docstring).
    ``max_new_tokens``: one budget for every row, or one per prompt."""

    kind: str = ""  # the registry's decoding kind

    def __init__(self, model: nn.Module, prompts: Sequence, max_new_tokens: int | Sequence[int]):
        self.model, self.cfg = model, model.cfg
        self.device = next(model.parameters()).device
        self.prompts = [ids_of(p) for p in prompts]
        n = len(self.prompts)
        self.rows = list(range(n))  # the prompt each row continues
        self.budget = _budgets(max_new_tokens, n)  # most tokens per output
        self.produced = [0] * n  # tokens chosen so far in each row's current output
        self.part = [0] * n  # which output of the row (a GLM's blanks: 0, 1, ...)
        self.finished = [False] * n
        self.logits: torch.Tensor = torch.empty(0, self.cfg.vocab_size, device=self.device)  # (B, V) fp32

    @staticmethod
    def context(cfg) -> int:
        """The most tokens, prompt and output together, a row of this kind decodes."""
        return cfg.max_seq_len

    @classmethod
    def room(cls, cfg, prompt: Sequence[int] | Prompt) -> int:
        """The most tokens a row may generate after ``prompt`` (each output's budget)."""
        return cls.context(cfg) - len(prompt)

    # ---------------------------------------------------------------- finishing rows
    def at_limit(self, row: int) -> bool:
        """Whether the token chosen now is the last the row's current output may have."""
        return self.produced[row] + 1 >= self.budget[row]

    def end(self, row: int, reason: str) -> bool:
        """The row's current output ended: at a stop token (``reason`` "stop"; the token is not
        fed) or at its budget ("length"; the token is part of the output). True when the row is
        finished; a GLM goes on to its next blank."""
        self.finished[row] = True
        return True

    def finish(self, row: int) -> None:
        """End the row outright (a stop string, a cancelled request)."""
        self.finished[row] = True

    # ---------------------------------------------------------------- the protocol
    def seen(self, vocab_size: int) -> torch.Tensor:
        """(B, V) bool: tokens already in each row's prompt, for the repetition penalty."""
        return _seen(self.prompts, vocab_size, self.device)

    @abstractmethod
    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""

    def _left_padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts as one batch: ids (B, W) and mask (B, W), padded on the left."""
        return left_pad(self.prompts, self.cfg.pad_token_id or 0, self.device)

    def reorder(self, rows: Sequence[int] | torch.Tensor) -> None:
        """Continue from rows ``rows`` (B',) in that order (beam search, finished rows leaving)."""
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        for name in ("rows", "budget", "produced", "part", "finished", "prompts"):
            old = getattr(self, name)
            setattr(self, name, [old[r] for r in rows])
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.logits = self.logits[index]
        self._keep(rows, index)

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        """Move this kind's own per-row state (its cache, masks, positions) to ``rows``
        (``index``: the same rows as a tensor on the model's device)."""

    def _advance(self) -> None:
        self.produced = [p + 1 for p in self.produced]


class CausalState(State):
    """Decoding state of a decoder-only model: prompts right-aligned in a ``SlotCache``, one
    prefill pass, then one token per row per step, each at its own position. Rows can join
    (``add``) and leave (``reorder``) at any time. When a row's window reaches the context,
    every row keeps its most recent half and the cache is computed again from there."""

    kind = "causal"

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                 cache: SlotCache | None = None):
        budgets = _budgets(max_new_tokens, len(prompts))
        super().__init__(model, [], budgets[:0])
        if cache is None:
            longest = max(len(p) for p in prompts)
            if longest > self.cfg.max_seq_len:
                raise ValueError(f"prompt of {longest} tokens is longer than the model's context of "
                                 f"{self.cfg.max_seq_len} tokens")
            cache = SlotCache(model, len(prompts), min(longest + max(budgets), self.cfg.max_seq_len))
        self.slots = cache
        self.position: list[int] = []  # per row: position id of the next token fed
        self.tokens: list[list[int]] = []  # per row: the tokens the cache holds, for a slide
        if prompts:
            self.add(prompts, budgets)

    def add(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int]) -> torch.Tensor:
        """New rows: prefill them together straight into their slots; returns their first
        next-token logits (m, V), also appended to ``logits``."""
        prompts = [ids_of(p) for p in prompts]
        budgets = _budgets(max_new_tokens, len(prompts))
        ids, mask = left_pad(prompts, self.cfg.pad_token_id or 0, self.device)
        cache = self.slots.prefill_window(*ids.shape)
        logits = self.model(ids, attention_mask=mask, cache=cache, last_only=True).logits[:, -1].float()  # (m, V)
        self.slots.join(mask, [len(p) for p in prompts])
        first = len(self.rows) and max(self.rows) + 1
        self.rows += list(range(first, first + len(prompts)))
        self.budget += budgets
        self.produced += [0] * len(prompts)
        self.part += [0] * len(prompts)
        self.finished += [False] * len(prompts)
        self.prompts += prompts
        self.position += [len(p) for p in prompts]
        self.tokens += [list(p) for p in prompts]
        self.logits = torch.cat([self.logits, logits]) if len(self.logits) else logits
        return logits

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""
        for row, token in zip(self.tokens, chosen.tolist()):
            row.append(token)
        slots = self.slots
        if slots.span + 1 > self.cfg.max_seq_len or (slots.end == slots.capacity and slots.span == slots.capacity):
            self.logits = self._slide()
        else:
            cache, mask = slots.window()
            positions = torch.tensor(self.position, device=self.device)[:, None]  # (B, 1)
            self.logits = self.model(chosen[:, None], attention_mask=mask, positions=positions, cache=cache,
                                     last_only=True).logits[:, -1].float()
            slots.advance()
            self.position = [p + 1 for p in self.position]
        self._advance()
        return self.logits

    def _slide(self) -> torch.Tensor:
        """The context is full: every row keeps its most recent half and the cache is
        computed again from there. Positions restart at 0 for the kept window, as if it were a
        fresh prompt. Recomputing half a context once per half a context keeps generation cost
        linear in its length."""
        keep = max(1, self.cfg.max_seq_len // 2)
        self.tokens = [t[-keep:] for t in self.tokens]
        self.slots.reset()
        ids, mask = left_pad(self.tokens, self.cfg.pad_token_id or 0, self.device)
        cache = self.slots.prefill_window(*ids.shape)
        logits = self.model(ids, attention_mask=mask, cache=cache, last_only=True).logits[:, -1].float()
        self.slots.join(mask, [len(t) for t in self.tokens])
        self.position = [len(t) for t in self.tokens]
        return logits

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.slots.reorder(rows)
        self.position = [self.position[r] for r in rows]
        self.tokens = [list(self.tokens[r]) for r in rows]


class Seq2SeqState(State):
    """Decoding state of an encoder-decoder model: the sources are encoded once, and the
    decoder starts from ``decoder_start_token_id`` with a KV cache (its cross-attention
    keys/values are projected once, on the first step)."""

    kind = "seq2seq"

    def __init__(self, model: nn.Module, sources: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                 cache=None):
        super().__init__(model, sources, max_new_tokens)
        cfg = self.cfg
        if cfg.decoder_start_token_id is None:
            raise ValueError("the model's config has no decoder_start_token_id to begin the target from")
        longest = max(len(s) for s in self.prompts)
        if longest > cfg.max_seq_len:
            raise ValueError(f"source of {longest} tokens is longer than the model's max_seq_len={cfg.max_seq_len}")
        if max(self.budget) >= cfg.max_seq_len:
            raise ValueError(f"max_new_tokens ({max(self.budget)}) must be below the model's max_seq_len "
                             f"({cfg.max_seq_len}): the target has one position for the start token")
        src, src_mask = self._left_padded()
        self.src_mask = src_mask
        self.memory = model.encode(src, src_mask)  # (B, S, d)
        self.cache = cache if cache is not None else model.make_cache(src.shape[0], max(self.budget) + 1)
        start = torch.full((src.shape[0], 1), cfg.decoder_start_token_id, dtype=torch.long, device=self.device)
        self.logits = self._step(start)

    @classmethod
    def room(cls, cfg, prompt) -> int:
        return cfg.max_seq_len - 1  # the target's positions, less the start token's

    def _step(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(None, ids, src_mask=self.src_mask, memory=self.memory, cache=self.cache, last_only=True)
        return out.logits[:, -1].float()  # (B, V)

    def seen(self, vocab_size: int) -> torch.Tensor:
        return torch.zeros(len(self.rows), vocab_size, dtype=torch.bool, device=self.device)  # the source is not output

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        self.logits = self._step(chosen[:, None])
        self._advance()
        return self.logits

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.memory, self.src_mask = self.memory[index], self.src_mask[index]
        self.cache.reorder(index)


class GLMState(State):
    """Decoding state of a GLM: each prompt is Part A with one or more blanks ([MASK] / [gMASK];
    by default its last token), and the output fills them in order, each span started by [S]
    (``decoder_start_token_id``) and ended by a stop token ([E]) or its budget.

    Part A is read bidirectionally once (prefill, with a KV cache, the first blank's [S] with it);
    every generated token then has 2-D position (its blank's position, 2, 3, ...). When a blank
    is done and another follows, the next step feeds that blank's [S] at (its position, 1) (after
    the last token, when the blank ended at its budget: that token is part of the filling), so
    later blanks see the earlier fillings, as Part B does in training. Left padding puts every
    row's Part A in the same slots; a row feeding one token where another feeds two gets a
    masked pad column."""

    kind = "glm"

    def __init__(self, model: nn.Module, prompts: Sequence, max_new_tokens: int | Sequence[int], cache=None,
                 blanks: Sequence[Sequence[int]] | None = None):
        super().__init__(model, prompts, max_new_tokens)
        cfg = self.cfg
        if cfg.decoder_start_token_id is None:
            raise ValueError("the GLM's config has no decoder_start_token_id: the [S] token that starts a span")
        if blanks is None:
            blanks = [p.blanks if isinstance(p, Prompt) else () for p in prompts]
        self.blanks = [list(b) if b else [len(p) - 1] for b, p in zip(blanks, self.prompts)]  # Part A positions
        for b, p in zip(self.blanks, self.prompts):
            if b != sorted(b) or b[0] < 0 or b[-1] >= len(p):
                raise ValueError(f"blanks {b} must be positions inside the prompt of {len(p)} tokens, in order")
        width = max(len(p) for p in self.prompts)
        columns = self.columns(width, self.blanks, self.budget)
        if columns > cfg.max_seq_len:
            raise ValueError(f"prompt of {width} tokens plus max_new_tokens={max(self.budget)} is longer than the "
                             f"model's context of {cfg.max_seq_len} tokens")
        ids, mask = self._left_padded()  # (B, W): Part A
        b = ids.shape[0]
        self.pending: list[str | None] = [None] * b  # per row: how its last blank ended, when another follows
        self.key_mask = torch.zeros(b, columns, dtype=torch.bool, device=self.device)  # (B, columns): keys so far
        self.key_mask[:, :width + 1] = torch.cat([mask, torch.ones(b, 1, dtype=torch.bool, device=self.device)], 1)
        self.used = width + 1  # columns in the cache
        self.part_a_len = torch.full((b,), width, dtype=torch.long, device=self.device)
        self.cache = cache if cache is not None else model.make_cache(b, columns)
        first = torch.tensor([bl[0] for bl in self.blanks], device=self.device)[:, None]  # (B, 1)
        positions = torch.cat([glm_part_a(positions_from_mask(mask)),  # (B, 2, W)
                               glm_in_span(first, torch.zeros_like(first))], 2)  # the first blank's [S]
        start = torch.full((b, 1), cfg.decoder_start_token_id, dtype=torch.long, device=self.device)
        out = model(torch.cat([ids, start], 1), attention_mask=self.key_mask[:, :self.used],
                    positions=positions, part_a_len=self.part_a_len, cache=self.cache, last_only=True)
        self.logits = out.logits[:, -1].float()  # (B, V)

    @staticmethod
    def columns(width: int, blanks: Sequence[Sequence[int]], budgets: Sequence[int]) -> int:
        """Cache columns a batch needs at most: Part A, the first [S], every token fed after it
        (all but each row's last), and a pad column per step where some row starts a blank."""
        return width + max(len(b) * n for b, n in zip(blanks, budgets)) + sum(len(b) - 1 for b in blanks)

    @classmethod
    def room(cls, cfg, prompt) -> int:
        n = max(1, len(prompt.blanks) if isinstance(prompt, Prompt) else 1)
        return (cfg.max_seq_len - len(prompt)) // n - 1

    def end(self, row: int, reason: str) -> bool:
        if self.part[row] + 1 < len(self.blanks[row]):
            self.pending[row] = reason
            return False
        self.finished[row] = True
        return True

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        start_id, pad_id = self.cfg.decoder_start_token_id, self.cfg.pad_token_id or 0
        feeds = []  # per row: [(token, its blank's Part A index, offset in the span), ...]
        for row, token in enumerate(chosen.tolist()):
            blanks, part = self.blanks[row], self.part[row]
            here = (token, blanks[part], self.produced[row] + 1)  # [S] was offset 0
            ended = self.pending[row]
            if ended is None:
                feeds.append([here])
            else:  # this blank is done: the next one's [S], after the last token if it belongs to the filling
                feeds.append(([here] if ended == "length" else []) + [(start_id, blanks[part + 1], 0)])
        width = max(len(f) for f in feeds)
        padded = [[(pad_id, 0, 0)] * (width - len(f)) + f for f in feeds]  # a masked pad column
        ids, blank_at, offset = torch.tensor(padded, device=self.device).unbind(-1)  # each (B, width)
        valid = torch.tensor([[False] * (width - len(f)) + [True] * len(f) for f in feeds], device=self.device)
        self.key_mask[:, self.used:self.used + width] = valid
        self.used += width
        self.logits = self.model(ids, attention_mask=self.key_mask[:, :self.used],
                                 positions=glm_in_span(blank_at, offset), part_a_len=self.part_a_len,
                                 cache=self.cache, last_only=True).logits[:, -1].float()
        for row, ended in enumerate(self.pending):
            if ended is None:
                self.produced[row] += 1
            else:
                self.part[row], self.produced[row], self.pending[row] = self.part[row] + 1, 0, None
        return self.logits

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.blanks = [self.blanks[r] for r in rows]
        self.pending = [self.pending[r] for r in rows]
        self.key_mask, self.part_a_len = self.key_mask[index], self.part_a_len[index]
        self.cache.reorder(index)


class XLState(State):
    """Decoding state of a Transformer-XL: like a decoder's, with the recurrence as the cache.

    The prompt runs in segments of ``max_seq_len`` (the model does that itself); each new
    token is then a segment of one, attending to the recurrence. The recurrence drops its oldest
    states by itself, so unlike a KV cache it never has to slide: it keeps ``mem_len +
    max_seq_len`` positions, the span the last token of a training segment saw."""

    kind = "recurrent"

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                 cache=None):
        super().__init__(model, prompts, max_new_tokens)
        cfg = self.cfg
        ids, mask = self._left_padded()
        self.history_mask = torch.cat([mask, torch.ones(ids.shape[0], max(self.budget), dtype=torch.bool,
                                                          device=self.device)], 1)  # (B, W + new): keys so far
        self.fed = ids.shape[1]  # history columns so far
        self.cache = cache if cache is not None else model.make_recurrence(ids.shape[0], self.context(cfg))
        self.logits = model(ids, attention_mask=mask, recurrence=self.cache, last_only=True).logits[:, -1].float()

    @staticmethod
    def context(cfg) -> int:
        return cfg.mem_len + cfg.max_seq_len  # what the recurrence keeps: beyond it, the oldest states drop out

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""
        self.fed += 1
        keys = self.history_mask[:, self.fed - 1 - self.cache.length:self.fed]  # (B, M + 1): the recurrence, then the token
        self.logits = self.model(chosen[:, None], attention_mask=keys, recurrence=self.cache,
                                 last_only=True).logits[:, -1].float()
        self._advance()
        return self.logits

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.history_mask = self.history_mask[index]
        self.cache.reorder(index)


class RNNState(State):
    """Decoding state of a recurrent LM: the cache is the recurrent state, one (h, c) per row.

    The left-padded prompts run once (the model packs them, so padding never enters the
    state); each chosen token is then one more step of the recurrence."""

    kind = "rnn"

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                 cache=None):
        super().__init__(model, prompts, max_new_tokens)
        ids, mask = self._left_padded()
        self.cache = cache if cache is not None else model.make_cache(ids.shape[0])
        self.logits = model(ids, attention_mask=mask, cache=self.cache, last_only=True).logits[:, -1].float()

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""
        self.logits = self.model(chosen[:, None], cache=self.cache, last_only=True).logits[:, -1].float()
        self._advance()
        return self.logits

    def _keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.cache.reorder(index)


STATES: dict[str, type[State]] = {s.kind: s for s in (CausalState, Seq2SeqState, GLMState, XLState, RNNState)}


def state_class(cfg) -> type[State]:
    """The State of a config's family (``family_of(cfg).decoding``); a clear error for one
    that does not generate."""
    family = family_of(cfg)
    if not family.can("generate"):
        raise ValueError(f"a model of {family} does not generate text")
    return STATES[family.decoding]


def start(model: nn.Module, prompts: Sequence, max_new_tokens: int | Sequence[int], cache=None, **options) -> State:
    """The decoding state for ``model``'s family, with the first next-token logits ready.
    For an encoder-decoder model the prompts are the sources; for a GLM, Part A with its blanks."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    return state_class(model.cfg)(model, prompts, max_new_tokens, cache=cache, **options)
