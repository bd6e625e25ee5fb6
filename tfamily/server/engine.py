"""The serving engine: one thread owns the model and decodes every request over the decoding
protocol (``generation.states``), so every family the registry can decode is served.

Requests arrive at any time and leave at any time; each engine tick decodes every running
request together:

    inbox (thread-safe queue) ─▶ admit: decoder-only requests join the one continuous batch:
                                         their prompts are prefilled together straight into free
                                         rows of the engine's SlotCache (CausalState.add);
                                         other families' requests that arrive together start a
                                         group over their State (Seq2SeqState, GLMState, XLState);
                                         a beam-search request starts a BeamSearch
                               ─▶ tick:  for the batch and each group: pick every row's token
                                         (its own params and seeded generator), emit text deltas
                                         and token probabilities, end finished or cancelled rows
                                         and drop them (their slot is reused at once), then one
                                         forward of every remaining row (State.append); each
                                         beam search takes one step

The decoder fast path is the continuous batch: one forward per tick for all decoder requests
however they arrived (see ``generation.slots`` for the slot cache). Probabilities reported are
the model's own softmax; temperature / top-k / top-p only change which token is drawn (as in
``generation.decode``).
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

from ..generation import filters
from ..generation.beam import BeamSearch
from ..generation.decode import SamplingParams, pick
from ..generation.slots import SlotCache
from ..generation.states import CausalState, Prompt, State, start, state_class
from ..generation.step import Step, describe
from ..models.family import family_of
from ..generation.stops import TextStream
from ..models.family import family_of

log = logging.getLogger("tfamily.server")


# ---------------------------------------------------------------------------------------
# what a request gets back
# ---------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """A piece of one request's output: new text and the Steps it came from.

    ``finish_reason`` is set on the output's last chunk ("stop", "length" or "cancelled");
    ``error`` replaces everything when the engine failed on this request. ``index``: which
    output of the request (a beam search returns several)."""
    text: str = ""
    tokens: list[Step] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0  # tokens generated so far (stop token included)
    error: str | None = None
    index: int = 0


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams  # max_new_tokens: per output (a GLM's: per blank)
    emit: Callable[[Chunk], None]  # called from the engine thread; must not block
    stop: Sequence[str] = ()
    cancelled: bool = False  # set by the caller (client went away); the slot is freed next step
    blanks: tuple[int, ...] = ()  # GLM: Part A positions of the blanks to fill (none: the last token)
    beam: int = 0  # > 0: beam search with this many beams, each returned as an output (Chunk.index)
    length_penalty: float = 1.0  # beam search: hypotheses ranked by logprob / length ** length_penalty

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def rows(self) -> int:
        """Decoding rows the request holds."""
        return max(1, self.beam)


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
@dataclass
class _Running:
    """One sampled request: a row of a batch's State."""
    req: Request
    text: TextStream
    generator: torch.Generator
    generated: int = 0


class _Batch:
    """Requests decoded together over one State; ``running[i]`` is the State's row i."""

    def __init__(self, state: State, running: list[_Running]):
        self.state, self.running = state, running


class _Beams:
    """One beam-search request and its search."""

    def __init__(self, req: Request, search: BeamSearch):
        self.req, self.search = req, search


class Engine:
    """Owns the model; runs requests in a background thread (see the module docstring).

    ``submit`` a Request from any thread; its ``emit`` receives Chunks from the engine
    thread. ``call`` runs a function on the engine thread between steps (embeddings,
    distributions), so the model is only ever used from one thread."""

    def __init__(self, model: nn.Module, tokenizer, max_batch: int = 32, max_alternatives: int = 20):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_alternatives = max_batch, max_alternatives
        self.family = family_of(model.cfg)
        generative = self.family.can("generate") and model.cfg.head == "lm"
        # an encoder does not decode: it only runs embedding jobs (see routes.py)
        self.states = state_class(model.cfg) if generative else None
        self.context = self.states.context(model.cfg) if generative else model.cfg.max_seq_len
        self.device = next(model.parameters()).device
        self.batch: _Batch | None = None  # decoder-only: the one continuous batch, over the slot cache
        self.groups: list[_Batch] = []  # other families: requests that arrived together
        self.beams: list[_Beams] = []
        if self.states is CausalState:
            self._new_batch()
        self.inbox: queue.Queue = queue.Queue()
        self.steps = 0  # decode ticks so far (for /health and tests)
        self.max_running = 0  # the most requests ever decoded together
        self.cancelled = 0  # requests whose slot was freed because the client went away
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="tfamily-engine", daemon=True)
        self._thread.start()

    def _new_batch(self) -> None:
        # capacity beyond the context: rows move left once per ~context/4 steps, not every step
        slots = SlotCache(self.model, self.max_batch, self.context + max(16, self.context // 4))
        self.batch = _Batch(CausalState(self.model, [], [], cache=slots), [])

    # ---------------------------------------------------------------- public, any thread
    def submit(self, req: Request) -> None:
        if self.states is None:
            raise ValueError(f"a model of {family_of(self.model.cfg)} does not generate text")
        if len(req.prompt_ids) == 0:
            raise ValueError("prompt has no tokens")
        room = self.states.room(self.model.cfg, Prompt(list(req.prompt_ids), tuple(req.blanks)))
        if req.params.max_new_tokens > room:
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
    def running(self) -> list:
        """The requests holding decode rows now (a snapshot)."""
        batches = ([self.batch] if self.batch is not None else []) + list(self.groups)
        return [r.req for b in batches for r in list(b.running)] + [b.req for b in list(self.beams)]

    @property
    def active(self) -> int:
        """Requests holding a decode slot now (read-only; 0 once every client has finished or left)."""
        return len(self.running)

    def close(self) -> None:
        self._closed = True
        self.inbox.put(None)
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- engine thread
    def _rows(self) -> int:
        batches = ([self.batch] if self.batch is not None else []) + self.groups
        return sum(len(b.running) for b in batches) + sum(b.req.rows for b in self.beams)

    def _loop(self) -> None:
        while not self._closed:
            try:
                fresh = self._take(block=not self._rows())
                with torch.inference_mode():
                    if fresh:
                        self._admit_or_fail(fresh)
                    self._drop_cancelled()
                    self._tick()
            except Exception as e:  # never let one bad batch kill the server
                log.exception("engine step failed")
                self._fail_all(f"internal error while decoding: {type(e).__name__}")

    def _take(self, block: bool) -> list[Request]:
        """New requests that fit in free rows; jobs found on the way are run at once."""
        fresh: list[Request] = []
        free = self.max_batch - self._rows()
        while free > 0:
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
                free -= item.rows  # a beam search wider than the batch still runs, alone
            else:
                _cancelled(item)
        return fresh

    @staticmethod
    def _run_job(fn, out: queue.Queue) -> None:
        try:
            with torch.inference_mode():
                out.put((fn(), None))
        except Exception as e:  # reported to the caller, who answers the client
            out.put((None, e))

    def _admit_or_fail(self, fresh: list[Request]) -> None:
        for r in [r for r in fresh if r.beam]:
            self._guard([r], self._admit_beams, r)
        sampled = [r for r in fresh if not r.beam]
        if sampled:
            self._guard(sampled, self._admit, sampled)
        self.max_running = max(self.max_running, self.active)

    def _guard(self, reqs: list[Request], fn, arg) -> bool:
        """Run ``fn(arg)``; if it fails these requests fail, the running ones go on."""
        try:
            fn(arg)
            return True
        except Exception as e:
            log.exception("prefill failed")
            for r in reqs:
                r.emit(Chunk(error=f"internal error while reading the prompt: {type(e).__name__}"))
            return False

    def _running(self, r: Request) -> _Running:
        return _Running(r, TextStream(self.tokenizer, r.stop, r.params.stop_token_ids),
                        _generator(r.params.seed, self.device))

    def _admit(self, fresh: list[Request]) -> None:
        """Decoder-only: prefill the new prompts into the continuous batch's slots. Others: one
        group over the family's State (each request alone if they cannot share one)."""
        budgets = [r.params.max_new_tokens for r in fresh]
        if self.batch is not None:
            self.batch.state.add([r.prompt_ids for r in fresh], budgets)
            self.batch.running.extend(self._running(r) for r in fresh)
            return
        prompts = [Prompt(list(r.prompt_ids), tuple(r.blanks)) for r in fresh]
        try:
            state = start(self.model, prompts, budgets)
        except ValueError:  # e.g. GLM blanks of several rows that do not fit one cache: one group each
            if len(fresh) == 1:
                raise
            for r in fresh:
                self._guard([r], self._admit, [r])
            return
        self.groups.append(_Batch(state, [self._running(r) for r in fresh]))

    def _admit_beams(self, r: Request) -> None:
        p = r.params
        state = start(self.model, [Prompt(list(r.prompt_ids), tuple(r.blanks))] * r.beam, p.max_new_tokens)
        search = BeamSearch(state, 1, r.beam, p.max_new_tokens, p.stop_token_ids, r.length_penalty,
                            top_alternatives=min(p.top_alternatives, self.max_alternatives), n_best=r.beam)
        self.beams.append(_Beams(r, search))

    def _tick(self) -> None:
        batches = ([self.batch] if self.batch is not None else []) + self.groups
        busy = [b for b in batches if b.running]
        for b in busy:
            self._step(b)
        for b in list(self.beams):
            self._step_beams(b)
        self.groups = [g for g in self.groups if g.running]
        if busy or self.beams:
            self.steps += 1

    def _step(self, batch: _Batch) -> None:
        """Pick every row's token, emit, drop the rows that finished, one forward of the rest."""
        state, outbox = batch.state, []
        chosen, keep = self._sample_and_emit(state, batch.running, state.logits, outbox)
        if len(keep) < len(batch.running):
            order = _drop_order(len(batch.running), set(range(len(batch.running))) - set(keep))
            self._reorder(batch, order)
            chosen = chosen[torch.as_tensor(order, dtype=torch.long, device=chosen.device)]
        for emit, chunk in outbox:  # once finished rows have left: a client told "done" finds its slot free
            emit(chunk)
        if batch.running:
            state.append(chosen)

    @staticmethod
    def _reorder(batch: _Batch, order: list[int]) -> None:
        batch.state.reorder(order)
        batch.running = [batch.running[i] for i in order]

    def _sample_and_emit(self, state: State, running: list[_Running], logits: torch.Tensor,
                         outbox: list) -> tuple[torch.Tensor, list[int]]:
        """Pick each row's token with its own params, put what became visible in ``outbox``
        as (emit, Chunk); (chosen ids, the rows that go on)."""
        chosen, failed = self._pick(running, logits)  # (n,), {row: error}
        steps = describe(logits, chosen, [min(s.req.params.top_alternatives, self.max_alternatives)
                                          for s in running])
        keep = []
        for i, (s, step) in enumerate(zip(running, steps)):
            if i in failed:  # this request ends with its error; the others go on
                state.finish(i)
                outbox.append((s.req.emit, Chunk(error=failed[i], completion_tokens=s.generated)))
                continue
            step.named(self.tokenizer)
            step.index, step.part = state.produced[i], state.part[i]
            s.generated += 1
            finish = None
            if step.token in s.text.stop_ids:
                if not state.end(i, "stop"):  # a GLM's next blank: the span's end is not text
                    keep.append(i)
                    continue
                text, tokens, _ = s.text.push(step)
                finish = "stop"
            else:
                text, tokens, stopped = s.text.push(step)
                if stopped:
                    state.finish(i)
                    finish = "stop"
                elif state.at_limit(i) and state.end(i, "length"):
                    finish = "length"
                    more, more_tokens = s.text.flush()
                    text, tokens = text + more, tokens + more_tokens
            if text or tokens or finish:
                outbox.append((s.req.emit, Chunk(text, tokens, finish, s.generated)))
            if finish is None:
                keep.append(i)
        return chosen, keep

    def _pick(self, states: list[_Running], logits: torch.Tensor) -> tuple[torch.Tensor, dict[int, str]]:
        """(n, V) -> (n,): greedy rows together, sampled rows one by one (each request has its
        own seeded generator, so its draws do not depend on who else is in the batch). A row
        whose sampling fails (its filters left no finite probability) is returned in the dict
        with its error, so that one request's parameters cannot end the whole batch."""
        chosen = filters.most_likely(logits)  # greedy: the filter chain's choice at temperature 0
        failed: dict[int, str] = {}
        for i, s in enumerate(states):
            if not filters.is_greedy(s.req.params.temperature):
                try:
                    chosen[i] = pick(logits[i:i + 1], s.req.params, None, s.generator)[0]
                except (RuntimeError, ValueError) as e:
                    log.exception("sampling failed for one request")
                    failed[i] = f"internal error while sampling: {type(e).__name__}"
        return chosen, failed

    def _step_beams(self, run: _Beams) -> None:
        """One step of a beam search; when it is over, every hypothesis is one output."""
        if not run.search.step():
            return
        self.beams.remove(run)
        r = run.req
        for index, hyp in enumerate(run.search.results()[0]):
            stream = TextStream(self.tokenizer, r.stop, r.params.stop_token_ids)
            text, tokens, stopped = "", [], False
            for step in hyp.steps:
                more, more_tokens, stopped = stream.push(step.named(self.tokenizer))
                text, tokens = text + more, tokens + more_tokens
                if stopped:
                    break
            if not stopped:
                more, more_tokens = stream.flush()
                text, tokens = text + more, tokens + more_tokens
            finish = "stop" if stopped or hyp.finished else "length"
            r.emit(Chunk(text, tokens, finish, len(hyp.steps), index=index))

    def _drop_cancelled(self) -> None:
        batches = ([self.batch] if self.batch is not None else []) + self.groups
        for batch in batches:
            gone = {i for i, s in enumerate(batch.running) if s.req.cancelled}
            if not gone:
                continue
            left = [batch.running[i] for i in sorted(gone)]
            self._reorder(batch, _drop_order(len(batch.running), gone))
            for s in left:  # once their slots are free
                self.cancelled += 1
                s.req.emit(Chunk(finish_reason="cancelled", completion_tokens=s.generated))
        for run in [b for b in self.beams if b.req.cancelled]:
            self.cancelled += 1
            self.beams.remove(run)
            _cancelled(run.req)
        self.groups = [g for g in self.groups if g.running]

    def _fail_all(self, message: str) -> None:
        for req in self.running:
            req.emit(Chunk(error=message))
        self.groups, self.beams = [], []
        if self.batch is not None:
            self._new_batch()


def _cancelled(req: Request) -> None:
    """Tell every output of ``req`` that it was cancelled."""
    for index in range(max(1, req.beam)):
        req.emit(Chunk(finish_reason="cancelled", index=index))


def _drop_order(n: int, drop: set[int]) -> list[int]:
    """The rows that stay, when each dropped row takes the last row in its place (so that a
    State moves one row per dropped row, not every row after it)."""
    order = list(range(n))
    for row in sorted(drop, reverse=True):
        order[row] = order[-1]
        order.pop()
    return order


def _generator(seed: int | None, device) -> torch.Generator:
    """Each request draws from its own generator: seeded when asked, otherwise fresh."""
    return torch.Generator(device=device).manual_seed(seed if seed is not None else random.getrandbits(63))
