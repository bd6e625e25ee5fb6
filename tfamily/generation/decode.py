"""The one decode generator, shared by the CLI, the server and the playground page.

    prompts ─ left-pad into one batch ─ prefill (one forward over all prompt tokens, KV cache)
            ─ loop: logits of the last position ─ filters ─ pick a token ─ yield Steps
                    ─ forward the picked tokens only (the cache holds the rest)

Every Step carries the chosen token, its probability under the model, and the top
alternatives with theirs, so a caller can show the distribution behind each word.
The probabilities are the model's own (softmax of the raw logits); temperature, top-k and
top-p change which token is drawn, not what the model believed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..nn.positions import positions_from_mask
from . import filters


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


@dataclass
class Step:
    seq: int  # which prompt of the batch
    index: int  # 0 for the first generated token
    token: int
    prob: float  # the model's probability of this token
    alternatives: list[tuple[int, float]] = field(default_factory=list)  # (token, prob), most likely first
    finished: bool = False  # True on a sequence's last step
    finish_reason: str | None = None  # "stop" (stop token / stop callback) or "length"


def pick(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) fp32 logits -> (B,) chosen ids, after repetition penalty, temperature, top-k, top-p."""
    if seen is not None:
        logits = filters.repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature < filters.MIN_TEMPERATURE:  # 0 = greedy; a tiny t would overflow to inf
        return logits.argmax(-1)
    logits = filters.temperature(logits, params.temperature)
    if params.top_k:
        logits = filters.top_k(logits, params.top_k)
    if params.top_p is not None:
        logits = filters.top_p(logits, params.top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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


class CausalState:
    """Decoding state of a decoder-only model: prompts left-padded into one batch, a prefill
    pass, then one token per row per step; the cache slides when the context is full."""

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int):
        cfg = model.cfg
        longest = max(len(p) for p in prompts)
        if longest > cfg.max_seq_len:
            raise ValueError(f"prompt of {longest} tokens is longer than the model's context of {cfg.max_seq_len} tokens")
        self.model, self.device = model, next(model.parameters()).device
        ids, mask = left_pad(prompts, cfg.pad_token_id or 0, self.device)
        self.prompt_ids, self.prompt_mask = ids, mask
        batch = ids.shape[0]
        # every token so far (prompt + generated), preallocated; the cache holds the last cache.length of them
        self.history = torch.zeros(batch, longest + max_new_tokens, dtype=torch.long, device=self.device)
        self.history_mask = torch.zeros_like(self.history, dtype=torch.bool)
        self.history[:, :longest], self.history_mask[:, :longest] = ids, mask
        self.end = longest  # tokens in history so far
        self.cache = model.make_cache(batch, min(longest + max_new_tokens, cfg.max_seq_len))
        self.logits = model(ids, attention_mask=mask, cache=self.cache, last_only=True).logits[:, -1].float()  # (B, V)

    def seen(self, vocab_size: int) -> torch.Tensor:
        """(B, V) bool: tokens already in each row (the prompt), for the repetition penalty."""
        seen = torch.zeros(self.history.shape[0], vocab_size, dtype=torch.bool, device=self.device)
        return seen.scatter_(1, self.prompt_ids, self.prompt_mask)

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""
        self.history[:, self.end], self.history_mask[:, self.end] = chosen, True
        self.end += 1
        cache, end = self.cache, self.end
        if cache.length == cache.max_len:
            self.logits = _slide(self.model, cache, self.history[:, :end], self.history_mask[:, :end])
        else:
            self.logits = self.model(chosen[:, None], attention_mask=self.history_mask[:, end - cache.length - 1:end],
                                     cache=cache, last_only=True).logits[:, -1].float()
        return self.logits

    def reorder(self, rows: torch.Tensor) -> None:
        """Continue from rows ``rows`` (B,) of the batch (beam search)."""
        self.history, self.history_mask = self.history[rows], self.history_mask[rows]
        self.prompt_ids, self.prompt_mask = self.prompt_ids[rows], self.prompt_mask[rows]
        self.cache.reorder(rows)


class Seq2SeqState:
    """Decoding state of an encoder-decoder model: the sources are encoded once, and the
    decoder starts from ``decoder_start_token_id`` with a KV cache (its cross-attention
    keys/values are projected once, on the first step)."""

    def __init__(self, model: nn.Module, sources: Sequence[Sequence[int]], max_new_tokens: int):
        cfg = model.cfg
        if cfg.decoder_start_token_id is None:
            raise ValueError("the model's config has no decoder_start_token_id to begin the target from")
        longest = max(len(s) for s in sources)
        if longest > cfg.max_seq_len:
            raise ValueError(f"source of {longest} tokens is longer than the model's max_seq_len={cfg.max_seq_len}")
        if max_new_tokens >= cfg.max_seq_len:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below the model's max_seq_len "
                             f"({cfg.max_seq_len}): the target has one position for the start token")
        self.model, self.device = model, next(model.parameters()).device
        src, src_mask = left_pad(sources, cfg.pad_token_id or 0, self.device)
        self.src_mask = src_mask
        self.memory = model.encode(src, src_mask)  # (B, S, d)
        self.cache = model.make_cache(src.shape[0], max_new_tokens + 1)
        start = torch.full((src.shape[0], 1), cfg.decoder_start_token_id, dtype=torch.long, device=self.device)
        self.logits = self._step(start)

    def _step(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(None, ids, src_mask=self.src_mask, memory=self.memory, cache=self.cache, last_only=True)
        return out.logits[:, -1].float()  # (B, V)

    def seen(self, vocab_size: int) -> torch.Tensor:
        return torch.zeros(self.memory.shape[0], vocab_size, dtype=torch.bool, device=self.device)

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        self.logits = self._step(chosen[:, None])
        return self.logits

    def reorder(self, rows: torch.Tensor) -> None:
        self.memory, self.src_mask = self.memory[rows], self.src_mask[rows]
        self.cache.reorder(rows)


class GLMState:
    """Decoding state of a GLM: each prompt is Part A, whose last token is the blank to fill
    (plain generation ends the prompt with [gMASK]); generation is that blank's span, started
    by [S] (``decoder_start_token_id``). Part A is read bidirectionally once (prefill, with a KV
    cache); every generated token then has 2-D position (the blank's position, 2, 3, ...).
    Left padding puts every row's Part A in the same slots, so one ``part_a_len`` fits all."""

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int):
        cfg = model.cfg
        if cfg.decoder_start_token_id is None:
            raise ValueError("the GLM's config has no decoder_start_token_id: the [S] token that starts a span")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > cfg.max_seq_len:
            raise ValueError(f"prompt of {longest} tokens plus max_new_tokens={max_new_tokens} is longer than the "
                             f"model's context of {cfg.max_seq_len} tokens")
        self.model, self.device = model, next(model.parameters()).device
        ids, mask = left_pad(prompts, cfg.pad_token_id or 0, self.device)  # (B, W): Part A
        self.prompt_ids, self.prompt_mask = ids, mask
        b, width = ids.shape
        self.blank = mask.sum(1) - 1  # (B,) Part A position of each row's last token, the blank
        self.generated = 0
        self.key_mask = torch.cat([mask, torch.ones(b, 1 + max_new_tokens, dtype=torch.bool, device=self.device)], 1)
        self.part_a_len = torch.full((b,), width, dtype=torch.long, device=self.device)
        self.cache = model.make_cache(b, longest + max_new_tokens)
        block_a = positions_from_mask(mask)  # (B, W)
        block = torch.cat([block_a, self.blank[:, None]], 1)  # (B, W + 1): [S] takes its blank's position
        inner = torch.cat([torch.zeros_like(block_a), torch.ones_like(self.blank[:, None])], 1)  # [S] is 1
        start = torch.full((b, 1), cfg.decoder_start_token_id, dtype=torch.long, device=self.device)
        out = model(torch.cat([ids, start], 1), attention_mask=self.key_mask[:, :width + 1],
                    positions=torch.stack([block, inner], 1), part_a_len=self.part_a_len, cache=self.cache,
                    last_only=True)
        self.logits = out.logits[:, -1].float()  # (B, V)

    def seen(self, vocab_size: int) -> torch.Tensor:
        seen = torch.zeros(self.prompt_ids.shape[0], vocab_size, dtype=torch.bool, device=self.device)
        return seen.scatter_(1, self.prompt_ids, self.prompt_mask)

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        self.generated += 1
        positions = torch.stack([self.blank, torch.full_like(self.blank, 1 + self.generated)], 1)[:, :, None]
        end = self.cache.length + 1
        self.logits = self.model(chosen[:, None], attention_mask=self.key_mask[:, :end], positions=positions,
                                 part_a_len=self.part_a_len, cache=self.cache, last_only=True).logits[:, -1].float()
        return self.logits

    def reorder(self, rows: torch.Tensor) -> None:
        self.prompt_ids, self.prompt_mask = self.prompt_ids[rows], self.prompt_mask[rows]
        self.blank, self.key_mask, self.part_a_len = self.blank[rows], self.key_mask[rows], self.part_a_len[rows]
        self.cache.reorder(rows)


class XLState:
    """Decoding state of a Transformer-XL: like a decoder's, with the memory as the cache.

    The prompt runs in segments of ``max_seq_len`` (the model does that itself); each new
    token is then a segment of one, attending to the memory. The memory drops its oldest
    states by itself, so unlike a KV cache it never has to slide: it keeps ``mem_len +
    max_seq_len`` positions, the span the last token of a training segment saw."""

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int):
        cfg = model.cfg
        self.model, self.device = model, next(model.parameters()).device
        ids, mask = left_pad(prompts, cfg.pad_token_id or 0, self.device)
        self.prompt_ids, self.prompt_mask = ids, mask
        self.history_mask = torch.cat([mask, torch.ones(ids.shape[0], max_new_tokens, dtype=torch.bool,
                                                          device=self.device)], 1)  # (B, W + new): keys so far
        self.end = ids.shape[1]
        self.cache = model.make_memory(ids.shape[0], cfg.mem_len + cfg.max_seq_len)
        self.logits = model(ids, attention_mask=mask, memory=self.cache, last_only=True).logits[:, -1].float()

    def seen(self, vocab_size: int) -> torch.Tensor:
        """(B, V) bool: tokens in each row's prompt, for the repetition penalty."""
        seen = torch.zeros(self.prompt_ids.shape[0], vocab_size, dtype=torch.bool, device=self.device)
        return seen.scatter_(1, self.prompt_ids, self.prompt_mask)

    def append(self, chosen: torch.Tensor) -> torch.Tensor:
        """Feed each row's chosen token (B,); returns the next logits (B, V) in fp32."""
        self.end += 1
        keys = self.history_mask[:, self.end - 1 - self.cache.length:self.end]  # (B, M + 1): memory, then the token
        self.logits = self.model(chosen[:, None], attention_mask=keys, memory=self.cache,
                                 last_only=True).logits[:, -1].float()
        return self.logits

    def reorder(self, rows: torch.Tensor) -> None:
        self.prompt_ids, self.prompt_mask, self.history_mask = (self.prompt_ids[rows], self.prompt_mask[rows],
                                                                self.history_mask[rows])
        self.cache.reorder(rows)


STATES = {"decoder": CausalState, "encoder-decoder": Seq2SeqState}
STATES["glm"] = GLMState
STATES["transformer-xl"] = XLState


def start(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int):
    """The decoding state for ``model``'s architecture, with the first next-token logits ready.
    For an encoder-decoder model the prompts are the sources."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    return STATES[model.cfg.arch](model, prompts, max_new_tokens)


@torch.inference_mode()
def decode(model: nn.Module, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
           should_stop: Callable[[int, list[int]], bool] | None = None) -> Iterator[list[Step]]:
    """Yield, per decoding step, one Step for each sequence still running.

    ``should_stop(seq, generated_ids)`` lets a caller end a sequence early (stop strings);
    it is asked after each token. Sequences that finish stop being yielded; the batch
    ends when all have finished or ``max_new_tokens`` is reached. A decoder-only model may
    generate past its context: when the cache is full it slides (see ``_slide``). For an
    encoder-decoder model the prompts are source sentences and the steps are the target's.
    """
    params = params or SamplingParams()
    state = start(model, prompts, params.max_new_tokens)
    device = state.logits.device
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    batch = state.logits.shape[0]
    seen = state.seen(model.cfg.vocab_size) if params.repetition_penalty != 1.0 else None
    running = [True] * batch
    generated: list[list[int]] = [[] for _ in range(batch)]
    stop_ids = set(params.stop_token_ids)
    logits = state.logits
    for index in range(params.max_new_tokens):
        chosen = pick(logits, params, seen, generator)  # (B,)
        logprobs = logits.log_softmax(-1)
        steps = _steps(index, chosen, logprobs, params.top_alternatives, running)
        for step in steps:
            generated[step.seq].append(step.token)
            stopped = step.token in stop_ids or (should_stop is not None and should_stop(step.seq, generated[step.seq]))
            if stopped or index == params.max_new_tokens - 1:
                step.finished, step.finish_reason = True, "stop" if stopped else "length"
                running[step.seq] = False
        yield steps
        if not any(running):
            return
        if seen is not None:
            seen[torch.arange(batch, device=device), chosen] = True
        logits = state.append(chosen)


def _slide(model: nn.Module, cache, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The context is full: keep the most recent half of it and recompute the cache from there.

    Positions restart at 0 for the kept window, as if it were a fresh prompt. Recomputing
    half a context once per half a context keeps generation cost linear in its length.
    """
    keep = max(1, model.cfg.max_seq_len // 2)
    cache.reset()
    return model(ids[:, -keep:], attention_mask=mask[:, -keep:], cache=cache, last_only=True).logits[:, -1].float()


def _steps(index: int, chosen: torch.Tensor, logprobs: torch.Tensor, k: int, running: list[bool]) -> list[Step]:
    """Steps for the running sequences: chosen token's probability and the top-k alternatives."""
    chosen_p = logprobs.gather(-1, chosen[:, None]).squeeze(-1).exp().tolist()
    if k:
        top = torch.topk(logprobs, min(k, logprobs.shape[-1]), dim=-1)
        alt_ids, alt_p = top.indices.tolist(), top.values.exp().tolist()
    tokens = chosen.tolist()
    return [Step(seq=i, index=index, token=tokens[i], prob=chosen_p[i],
                 alternatives=list(zip(alt_ids[i], alt_p[i])) if k else [])
            for i in range(len(tokens)) if running[i]]
