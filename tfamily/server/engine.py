"""The serving engine: continuous batching over one model, in one thread that owns it.

Requests arrive at any time and leave at any time; one batched forward per step decodes
every running request together, so N concurrent clients share the cost of each forward.

    inbox (thread-safe queue) ─▶ admit: prefill the new prompts together (own small cache),
                                         sample their first token, copy their K/V into free slots
                               ─▶ step:  one forward of the last token of every running slot
                                         (one row per slot, explicit positions, a padding mask)
                               ─▶ sample per row (each request's own params and seeded generator)
                               ─▶ emit text deltas + token probabilities; retire finished or
                                  cancelled slots (their row is reused at once)

The slot cache keeps each running sequence right-aligned at one shared write column
``end``: a row's tokens occupy [start_row, end), older columns are masked out. A window
[min start, end) is handed to the model as an ordinary KV cache, so the model code needs no
change. When ``end`` reaches the storage's capacity, every row moves left by the oldest
row's start (once per many steps, since capacity exceeds the model's context).

Probabilities reported are the model's own softmax; temperature / top-k / top-p only
change which token is drawn (as in ``generation.decode``).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..generation.decode import SamplingParams, left_pad, pick
from ..nn.cache import KVCache

log = logging.getLogger("tfamily.server")


# ---------------------------------------------------------------------------------------
# what a request gets back
# ---------------------------------------------------------------------------------------
@dataclass
class TokenInfo:
    id: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, logprob), most likely first


@dataclass
class Chunk:
    """A piece of one request's output: new text and the tokens it came from.

    ``finish_reason`` is set on the request's last chunk ("stop", "length" or "cancelled");
    ``error`` replaces everything when the engine failed on this request."""
    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0  # tokens generated so far (stop token included)
    error: str | None = None


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Chunk], None]  # called from the engine thread; must not block
    stop: Sequence[str] = ()
    cancelled: bool = False  # set by the caller (client went away); the slot is freed next step

    def cancel(self) -> None:
        self.cancelled = True


# ---------------------------------------------------------------------------------------
# text: stop strings and incomplete characters
# ---------------------------------------------------------------------------------------
class TextStream:
    """Turns one request's tokens into text deltas, honouring stop strings.

    Text that might be the beginning of a stop string (or an incomplete UTF-8 character,
    shown as U+FFFD) is held back until it is known not to be; tokens are released together
    with their text, so a client that draws tokens sees exactly the text it was sent."""

    def __init__(self, tokenizer, stop: Sequence[str], stop_ids: Sequence[int]):
        self.tokenizer, self.stop, self.stop_ids = tokenizer, tuple(stop), set(stop_ids)
        self.ids: list[int] = []
        self.text = ""  # decoded so far
        self.sent = 0  # characters of text already released
        self.pending: list[tuple[int, TokenInfo]] = []  # (text offset, token) not yet released

    def push(self, tok: TokenInfo) -> tuple[str, list[TokenInfo], bool]:
        """(text to release, tokens to release, stopped by a stop token / string)."""
        if tok.id in self.stop_ids:
            return self._release(len(self.text)) + (True,)
        offset = len(self.text)
        self.ids.append(tok.id)
        self.text = self.tokenizer.decode(self.ids)
        self.pending.append((offset, tok))
        hit = self._find_stop()
        if hit is not None:
            self.text = self.text[:hit]
            return self._release(hit) + (True,)
        if self._held_back():
            return "", [], False
        return self._release(len(self.text)) + (False,)

    def flush(self) -> tuple[str, list[TokenInfo]]:
        return self._release(len(self.text))

    def _release(self, upto: int) -> tuple[str, list[TokenInfo]]:
        text = self.text[self.sent:upto]
        tokens = [t for off, t in self.pending if off < upto]
        self.sent, self.pending = max(self.sent, upto), []
        return text, tokens

    def _find_stop(self) -> int | None:
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.sent - longest)  # a stop string completed now ends in the unreleased tail
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> bool:
        tail = self.text[self.sent:]
        if tail.endswith("\ufffd"):
            return True
        return any(tail.endswith(s[:k]) for s in self.stop for k in range(1, len(s)))


# ---------------------------------------------------------------------------------------
# the slot cache
# ---------------------------------------------------------------------------------------
class WindowCache(KVCache):
    """A KV cache that is a view on the slot storage: rows [0, n), columns [begin, capacity).

    The model writes its new keys/values at ``length`` (= end - begin) exactly as into a
    KVCache of its own; the writes land in the shared storage."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, length: int):  # noqa: D107 (storage views)
        self.k, self.v = k, v  # (L, n, H_kv, capacity - begin, D)
        self.max_len = k.shape[3]
        self.length = length
        self.cross = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (n, H_kv, end, D)


class SlotCache:
    """K/V storage for up to ``slots`` running sequences, rows kept dense: rows [0, n) run.

        k, v   (L, slots, H_kv, capacity, D)
        mask   (slots, capacity) bool: True where a row has a real token
        start  row -> first column of its tokens; all rows end at column ``end``
    """

    def __init__(self, model: nn.Module, slots: int, capacity: int):
        probe = model.make_cache(1, 1)  # shapes and dtype as the model wants them
        n_layer, _, n_kv, _, head_dim = probe.k.shape
        shape = (n_layer, slots, n_kv, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=probe.k.dtype, device=probe.k.device)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.zeros(slots, capacity, dtype=torch.bool, device=probe.k.device)
        self.start: list[int] = []
        self.end = 0
        self.capacity = capacity

    @property
    def n(self) -> int:
        return len(self.start)

    def insert(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> None:
        """Add prefilled rows: k, v (L, m, H_kv, W, D) and mask (m, W), right-aligned at ``end``."""
        m, w = mask.shape
        if self.n == 0:
            self.end = w
        elif self.end < w:
            self._shift(w - self.end)
        rows = slice(self.n, self.n + m)
        self.k[:, rows, :, self.end - w:self.end] = k
        self.v[:, rows, :, self.end - w:self.end] = v
        self.mask[rows] = False
        self.mask[rows, self.end - w:self.end] = mask
        self.start.extend([self.end - w] * m)

    def window(self) -> tuple[WindowCache, torch.Tensor]:
        """The cache the model sees for one decode step, and its (n, S + 1) attention mask
        (the new token's column already marked), making room first if storage is full."""
        if self.end == self.capacity:
            self._shift(-min(self.start))
        begin, n = min(self.start), self.n
        self.mask[:n, self.end] = True
        cache = WindowCache(self.k[:, :n, :, begin:], self.v[:, :n, :, begin:], self.end - begin)
        return cache, self.mask[:n, begin:self.end + 1]

    def advance(self) -> None:
        self.end += 1

    def remove(self, row: int) -> None:
        """Free ``row``: the last row moves into its place, keeping rows dense."""
        last = self.n - 1
        if row != last:
            self.k[:, row] = self.k[:, last]
            self.v[:, row] = self.v[:, last]
            self.mask[row] = self.mask[last]
            self.start[row] = self.start[last]
        self.start.pop()
        self.mask[last] = False
        if not self.start:
            self.end = 0

    def _shift(self, d: int) -> None:
        """Move every running row d columns right (d > 0) or left (d < 0)."""
        n, end = self.n, self.end
        src = slice(max(0, -d), end)
        dst = slice(max(0, d), end + d)
        self.k[:, :n, :, dst] = self.k[:, :n, :, src].clone()
        self.v[:, :n, :, dst] = self.v[:, :n, :, src].clone()
        self.mask[:n, dst] = self.mask[:n, src].clone()
        if d > 0:
            self.mask[:n, :d] = False
        else:
            self.mask[:n, end + d:] = False
        self.start = [s + d for s in self.start]
        self.end = end + d


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
@dataclass
class _Running:
    req: Request
    text: TextStream
    generator: torch.Generator
    position: int  # position id of the next token fed to the model
    last: int = 0  # the token to feed next
    generated: int = 0


class Engine:
    """Owns the model; runs requests with continuous batching in a background thread.

    ``submit`` a Request from any thread; its ``emit`` receives Chunks from the engine
    thread. ``call`` runs a function on the engine thread between steps (embeddings,
    distributions), so the model is only ever used from one thread."""

    def __init__(self, model: nn.Module, tokenizer, max_batch: int = 32, max_alternatives: int = 20):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_alternatives = max_batch, max_alternatives
        self.context = model.cfg.max_seq_len
        self.device = next(model.parameters()).device
        # capacity beyond the context: rows move left once per ~context/4 steps, not every step
        # an encoder has no cache and never decodes: it only runs embedding jobs (see api.py)
        self.slots = (SlotCache(model, max_batch, self.context + max(16, self.context // 4))
                      if hasattr(model, "make_cache") else None)
        self.running: list[_Running] = []
        self.inbox: queue.Queue = queue.Queue()
        self.steps = 0  # batched decode forwards so far (for /health and tests)
        self.max_running = 0  # the most requests ever decoded together
        self.cancelled = 0  # requests whose slot was freed because the client went away
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="tfamily-engine", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public, any thread
    def submit(self, req: Request) -> None:
        if len(req.prompt_ids) == 0:
            raise ValueError("prompt has no tokens")
        if len(req.prompt_ids) + req.params.max_new_tokens > self.context:
            raise ValueError(f"prompt ({len(req.prompt_ids)} tokens) + max_tokens ({req.params.max_new_tokens}) "
                             f"exceeds the context of {self.context} tokens")
        self.inbox.put(req)

    def call(self, fn: Callable[[], object]) -> "queue.Queue":
        """Run ``fn()`` on the engine thread; returns a queue that receives (result, error)."""
        out: queue.Queue = queue.Queue(maxsize=1)
        self.inbox.put((fn, out))
        return out

    @property
    def waiting(self) -> int:
        return self.inbox.qsize()

    @property
    def active(self) -> int:
        """Requests holding a decode slot now (read-only; 0 once every client has finished or left)."""
        return len(self.running)

    def close(self) -> None:
        self._closed = True
        self.inbox.put(None)
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- engine thread
    def _loop(self) -> None:
        while not self._closed:
            try:
                fresh = self._take(block=not self.running)
                with torch.inference_mode():
                    if fresh:
                        self._admit_or_fail(fresh)
                    self._drop_cancelled()
                    if self.running:
                        self._step()
            except Exception as e:  # never let one bad batch kill the server
                log.exception("engine step failed")
                self._fail_all(f"internal error while decoding: {type(e).__name__}")

    def _take(self, block: bool) -> list[Request]:
        """New requests that fit in free slots; jobs found on the way are run at once."""
        fresh: list[Request] = []
        free = self.max_batch - len(self.running)
        while len(fresh) < free:
            try:
                item = self.inbox.get(timeout=0.5) if block and not fresh else self.inbox.get_nowait()
            except queue.Empty:
                if block and not fresh and not self._closed:
                    continue
                break
            if item is None:
                break
            if isinstance(item, tuple):
                self._run_job(*item)
            elif not item.cancelled:
                fresh.append(item)
            else:
                item.emit(Chunk(finish_reason="cancelled"))
        return fresh

    @staticmethod
    def _run_job(fn, out: queue.Queue) -> None:
        try:
            with torch.inference_mode():
                out.put((fn(), None))
        except Exception as e:  # reported to the caller, who answers the client
            out.put((None, e))

    def _admit_or_fail(self, fresh: list[Request]) -> None:
        try:
            self._admit(fresh)
        except Exception as e:  # these requests fail; the running ones go on
            log.exception("prefill failed")
            for r in fresh:
                r.emit(Chunk(error=f"internal error while reading the prompt: {type(e).__name__}"))

    def _admit(self, fresh: list[Request]) -> None:
        """Prefill the new prompts in one forward, sample their first tokens, give them slots."""
        ids, mask = left_pad([r.prompt_ids for r in fresh], self.model.cfg.pad_token_id or 0, self.device)
        cache = self.model.make_cache(len(fresh), ids.shape[1])
        logits = self.model(ids, attention_mask=mask, cache=cache, last_only=True).logits[:, -1].float()  # (m, V)
        states = [_Running(r, TextStream(self.tokenizer, r.stop, r.params.stop_token_ids), _generator(r.params.seed, self.device),
                           position=len(r.prompt_ids)) for r in fresh]
        keep = self._sample_and_emit(states, logits)
        if keep:
            rows = torch.tensor(keep, device=self.device)
            self.slots.insert(cache.k.index_select(1, rows), cache.v.index_select(1, rows), mask[rows])
            self.running.extend(states[i] for i in keep)
            self.max_running = max(self.max_running, len(self.running))

    def _step(self) -> None:
        """One forward of every running row's last token; sample, emit, retire."""
        cache, mask = self.slots.window()
        ids = torch.tensor([[s.last] for s in self.running], device=self.device)  # (n, 1)
        positions = torch.tensor([[s.position] for s in self.running], device=self.device)  # (n, 1)
        logits = self.model(ids, attention_mask=mask, positions=positions, cache=cache,
                            last_only=True).logits[:, -1].float()  # (n, V)
        self.slots.advance()
        self.steps += 1
        for s in self.running:
            s.position += 1
        keep = set(self._sample_and_emit(self.running, logits))
        for row in reversed(range(len(self.running))):
            if row not in keep:
                self._retire(row)

    def _sample_and_emit(self, states: list[_Running], logits: torch.Tensor) -> list[int]:
        """Pick each row's token with its own params, emit what became visible, return the
        rows that go on."""
        logprobs = logits.log_softmax(-1)  # (n, V): the model's own distribution
        k = min(max(s.req.params.top_alternatives for s in states), self.max_alternatives, logits.shape[-1])
        top = torch.topk(logprobs, k, dim=-1) if k else None
        chosen, failed = self._pick(states, logits)  # (n,), {row: error}
        chosen_lp = logprobs.gather(-1, chosen[:, None]).squeeze(-1).tolist()
        chosen = chosen.tolist()
        top_ids = top.indices.tolist() if top is not None else None
        top_lps = top.values.tolist() if top is not None else None
        keep = []
        for i, s in enumerate(states):
            if i in failed:  # this request ends with its error; the others go on
                s.req.emit(Chunk(error=failed[i], completion_tokens=s.generated))
                continue
            n_alt = s.req.params.top_alternatives
            alts = [(t, self.tokenizer.token_text(t), lp) for t, lp in zip(top_ids[i][:n_alt], top_lps[i][:n_alt])] \
                if n_alt and top_ids is not None else []
            tok = TokenInfo(chosen[i], self.tokenizer.token_text(chosen[i]), chosen_lp[i], alts)
            s.generated += 1
            s.last = chosen[i]
            text, tokens, stopped = s.text.push(tok)
            finish = "stop" if stopped else ("length" if s.generated >= s.req.params.max_new_tokens else None)
            if finish == "length":
                more, more_tokens = s.text.flush()
                text, tokens = text + more, tokens + more_tokens
            if text or tokens or finish:
                s.req.emit(Chunk(text, tokens, finish, s.generated))
            if finish is None:
                keep.append(i)
        return keep

    def _pick(self, states: list[_Running], logits: torch.Tensor) -> tuple[torch.Tensor, dict[int, str]]:
        """(n, V) -> (n,): greedy rows together, sampled rows one by one (each request has its
        own seeded generator, so its draws do not depend on who else is in the batch). A row
        whose sampling fails (its filters left no finite probability) is returned in the dict
        with its error, so that one request's parameters cannot end the whole batch."""
        chosen = logits.argmax(-1)
        failed: dict[int, str] = {}
        for i, s in enumerate(states):
            if s.req.params.temperature > 0:
                try:
                    chosen[i] = pick(logits[i:i + 1], s.req.params, None, s.generator)[0]
                except (RuntimeError, ValueError) as e:
                    log.exception("sampling failed for one request")
                    failed[i] = f"internal error while sampling: {type(e).__name__}"
        return chosen, failed

    def _drop_cancelled(self) -> None:
        for row in reversed(range(len(self.running))):
            if self.running[row].req.cancelled:
                self.cancelled += 1
                self.running[row].req.emit(Chunk(finish_reason="cancelled",
                                                 completion_tokens=self.running[row].generated))
                self._retire(row)

    def _retire(self, row: int) -> None:
        last = len(self.running) - 1
        self.running[row] = self.running[last]
        self.running.pop()
        self.slots.remove(row)

    def _fail_all(self, message: str) -> None:
        for s in self.running:
            s.req.emit(Chunk(error=message))
        self.running.clear()
        self.slots = SlotCache(self.model, self.max_batch, self.slots.capacity)


def _generator(seed: int | None, device) -> torch.Generator:
    """Each request draws from its own generator: seeded when asked, otherwise fresh."""
    return torch.Generator(device=device).manual_seed(seed if seed is not None else random.getrandbits(63))
