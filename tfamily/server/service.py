"""The service behind the routes: request bodies turned into engine requests, per family.

A prompt is read as the model's family reads it (``generation.prompts``): a decoder continues
it, an encoder-decoder takes it as the source and returns the decoder's output, a GLM fills its
[MASK] / [gMASK] blanks (a prompt without one gets [gMASK] at its end). Limits (the prompt, the
tokens it leaves room for) come from the family's State, so every family gets the same clear
400s; an encoder serves embeddings only.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import torch

from ..generation import filters, prompts as family_prompts
from ..generation.chat import chat_stops, render_chat
from ..generation.decode import SamplingParams
from ..generation.fewshot import fewshot_messages, fewshot_prompt, fewshot_stop
from ..generation.states import Prompt, start
from ..generation.step import top_alternatives
from ..models.family import family_of
from .engine import Chunk, Engine, Request
from .middleware import ApiError
from .schemas import (MAX_ATTENTION_WEIGHTS, MAX_BATCH_INPUTS, MAX_STOP, AttentionBody, ChatBody, CompletionBody,
                      DistributionBody, FewShot, SamplingBody, TextPart)


class Service:
    def __init__(self, engine: Engine, tokenizer, model_name: str, chat_template: str | None):
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.template = chat_template
        self.context = engine.context
        self.cfg = engine.model.cfg
        self.vocab_size = self.cfg.vocab_size
        self.family = family_of(self.cfg)
        self.states = engine.states  # the family's decoding State; None: it does not generate
        self.generative = self.states is not None  # encoders only embed
        self.attends = self.family.mixing == "attention"  # a recurrent network has no attention to show
        self.created = int(time.time())

    # ---------------------------------------------------------------- checks
    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")

    def check_common(self, body: SamplingBody) -> tuple[str, ...]:
        self.check_model(body.model)
        if not self.generative:
            raise ApiError(400, f"{self.model_name} is a {self.family}, which does "
                                "not generate text; it serves /v1/embeddings, not completions", "model")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(body, name):
                raise ApiError(400, f"{name} is not supported (only 0)", name)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP:
            raise ApiError(400, f"stop: at most {MAX_STOP} stop strings, got {len(stop)}", "stop")
        if any(not s for s in stop):
            raise ApiError(400, "stop: stop strings must be non-empty", "stop")
        if body.top_k is not None and body.top_k > self.vocab_size:
            raise ApiError(400, f"top_k: must be <= the vocabulary size {self.vocab_size}", "top_k")
        return tuple(stop)

    def check_ids(self, ids: list[int], param: str) -> list[int]:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ApiError(400, f"{param}: token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})", param)
        return ids

    def encode_ids(self, prompt, param: str) -> list[int]:
        """Text or token ids as plain tokens (embeddings, the distribution view), within the context."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else self.check_ids(list(prompt), param)
        if not ids:  # an empty input starts from the start (or end-of-text) token, as generation.text does
            start_id = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
            if start_id is None:
                raise ApiError(400, f"{param}: the prompt is empty and the tokenizer has no start token", param)
            ids = [start_id]
        if len(ids) >= self.context:
            raise ApiError(400, f"{param}: the prompt is {len(ids)} tokens; the model's context is {self.context} "
                           "tokens and at least one must be left to generate", param, "context_length_exceeded")
        return ids

    def encode_prompt(self, prompt, param: str) -> Prompt:
        """A completion or chat prompt as the family reads it (``generation.prompts.encode``)."""
        if not isinstance(prompt, str):
            self.check_ids(list(prompt), param)
        try:
            encoded = family_prompts.encode(self.cfg, self.tokenizer, prompt)
        except ValueError as e:
            raise ApiError(400, f"{param}: {e}", param) from None
        p = encoded if isinstance(encoded, Prompt) else Prompt(list(encoded))
        if self.states.room(self.cfg, p) < 1:
            raise ApiError(400, f"{param}: the prompt is {len(p)} tokens; the model's context is {self.context} "
                           "tokens and at least one must be left to generate", param, "context_length_exceeded")
        return p

    def max_new(self, body: SamplingBody, prompt: Prompt, default: int) -> int:
        """Tokens per output (a GLM's: per blank), as asked, or ``default``, within the room left."""
        asked = body.max_completion_tokens or body.max_tokens
        room = self.states.room(self.cfg, prompt)
        if asked is None:
            return min(default, room)
        field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        if asked > room:
            per = f" per blank ({len(prompt.blanks)} blanks)" if len(prompt.blanks) > 1 else ""
            raise ApiError(400, f"{field}: {asked} tokens{per} do not fit: the prompt is {len(prompt)} tokens and the "
                           f"context {self.context} (at most {room})", field, "context_length_exceeded")
        return asked

    def params(self, body: SamplingBody, max_new: int, alternatives: int, stop_ids, index: int) -> SamplingParams:
        seed = None if body.seed is None else body.seed + index  # n choices differ, each reproducible
        temperature, top_k, top_p = filters.limits(body.temperature, body.top_k, body.top_p)
        return SamplingParams(max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              top_alternatives=alternatives, stop_token_ids=tuple(stop_ids))

    def stop_ids(self, body: SamplingBody) -> tuple[int, ...]:
        """Where the family's outputs end (end-of-text; a GLM span's [E]), unless ignore_eos."""
        return () if body.ignore_eos else family_prompts.stop_ids(self.cfg, self.tokenizer)

    # ---------------------------------------------------------------- prompts
    def completion_prompts(self, body: CompletionBody) -> tuple[list[Prompt], tuple[str, ...]]:
        extra_stop: tuple[str, ...] = ()
        if body.fewshot is not None:
            if body.prompt is not None:
                raise ApiError(400, "give either prompt or fewshot, not both", "fewshot")
            prompts = [self._fewshot_text(body.fewshot)]
            extra_stop = fewshot_stop()
        elif body.prompt is None:
            raise ApiError(400, "prompt: field required", "prompt")
        elif isinstance(body.prompt, str) or (body.prompt and isinstance(body.prompt[0], int)):
            prompts = [body.prompt]
        else:
            prompts = list(body.prompt)
        if not prompts:
            raise ApiError(400, "prompt: at least one prompt is required", "prompt")
        if len(prompts) * body.n > MAX_BATCH_INPUTS:
            raise ApiError(400, f"prompt: at most {MAX_BATCH_INPUTS} prompts x n per request", "prompt")
        return [self.encode_prompt(p, "prompt") for p in prompts], extra_stop

    def attention_request(self, body: AttentionBody) -> tuple[Prompt, list[int], list[int]]:
        """(the prompt as the family reads it, the generated ids, the steps asked for) of an
        /tfamily/attention body, each checked: a 400 names the field at fault."""
        self.check_model(body.model)
        if not self.generative:
            raise ApiError(400, f"{self.model_name} is a {self.family}, which does not generate text: "
                                "there are no generation steps to show", "model")
        if not self.attends:
            raise ApiError(400, f"{self.model_name} is a {self.family}, which has no attention layers to show",
                           "model")
        prompt = self.encode_prompt(body.prompt, "prompt")
        if not prompt.ids:
            raise ApiError(400, "prompt: the prompt has no tokens", "prompt")
        if len(prompt.blanks) > 1:  # a completion does not show where one blank's filling ends: the first one
            prompt = Prompt(prompt.ids, prompt.blanks[:1])
        completion = self.check_ids(list(body.completion_ids), "completion_ids")
        room = self.states.room(self.cfg, prompt)
        if len(completion) > room:
            raise ApiError(400, f"completion_ids: {len(completion)} generated tokens do not fit after a prompt of "
                                f"{len(prompt)} tokens (at most {room} in the context of {self.context})",
                           "completion_ids", "context_length_exceeded")
        steps = sorted(set(body.steps)) if body.steps is not None else list(range(len(completion)))
        if steps[-1] >= len(completion):
            raise ApiError(400, f"steps: {steps[-1]} is not a generated token's index; there are "
                                f"{len(completion)} (0 to {len(completion) - 1})", "steps")
        kinds = 2 if self.family.prompt == "source" else 1  # an encoder-decoder's cross- and self-attention
        keys = len(prompt) + 1 + steps[-1]  # the most keys a step can see
        numbers = len(steps) * kinds * self.cfg.n_layer * self.cfg.n_head * keys
        if numbers > MAX_ATTENTION_WEIGHTS:
            raise ApiError(400, f"steps: {len(steps)} steps would return about {numbers:,} weights, more than "
                                f"{MAX_ATTENTION_WEIGHTS:,}; ask for fewer steps", "steps")
        return prompt, completion, steps

    def _fewshot_text(self, fs: FewShot) -> str:
        try:
            return fewshot_prompt(fs.query, fs.example_dicts(), fs.instruction)
        except ValueError as e:
            raise ApiError(400, f"fewshot.{e}", "fewshot.examples") from None

    def chat_prompt(self, body: ChatBody) -> tuple[Prompt, tuple[str, ...], tuple[int, ...]]:
        if body.fewshot is not None:
            if body.messages:
                raise ApiError(400, "give either messages or fewshot, not both", "fewshot")
            try:
                messages = fewshot_messages(body.fewshot.query, body.fewshot.example_dicts(), body.fewshot.instruction)
            except ValueError as e:
                raise ApiError(400, f"fewshot.{e}", "fewshot.examples") from None
        else:
            if not body.messages:
                raise ApiError(400, "messages: at least one message is required", "messages")
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text_content(m.content)}
                        for m in body.messages]
        try:
            text = render_chat(messages, self.template)
        except Exception as e:  # a template error is the checkpoint's, but report it, not a trace
            raise ApiError(400, f"messages: the chat template could not render them: {e}", "messages") from None
        stop, stop_ids = chat_stops(self.tokenizer, self.template, self.cfg)
        return self.encode_prompt(text, "messages"), stop, stop_ids

    # ---------------------------------------------------------------- running
    def start(self, prompts: list[Prompt], body: SamplingBody, alternatives: int, stop: tuple[str, ...],
              stop_ids, default_max: int) -> tuple["Streams", list[int]]:
        """Submit every (prompt, choice) pair (with ``use_beam_search``: one beam search per
        prompt, its n best the choices); returns the merged output and the prompt lengths."""
        maxes = [self.max_new(body, p, default_max) for p in prompts]  # check all before starting any
        if body.use_beam_search:
            if not stop_ids:
                raise ApiError(400, "use_beam_search: beam search needs an end token to finish hypotheses "
                                    "(not with ignore_eos)", "use_beam_search")
            if any(len(p.blanks) > 1 for p in prompts):
                raise ApiError(400, "use_beam_search: beam search fills one blank; this prompt has several",
                               "use_beam_search")
        streams = Streams()
        for p_i, p in enumerate(prompts):
            if body.use_beam_search:
                req = Request(p.ids, self.params(body, maxes[p_i], alternatives, stop_ids, 0), None, stop,
                              blanks=p.blanks, beam=body.n, length_penalty=body.length_penalty)
                streams.add(req, p_i * body.n, body.n)
                self.engine.submit(req)
                continue
            for c in range(body.n):
                req = Request(p.ids, self.params(body, maxes[p_i], alternatives, stop_ids, c), None, stop,
                              blanks=p.blanks)
                streams.add(req, p_i * body.n + c, 1)
                self.engine.submit(req)
        return streams, [len(p) for p in prompts]

    async def run_job(self, fn):
        """Run ``fn`` on the engine thread (which owns the model) without blocking the event loop."""
        out = self.engine.call(fn)
        result, error = await asyncio.get_running_loop().run_in_executor(None, out.get)
        if error is not None:
            raise error
        return result


def _text_content(content: str | list[TextPart]) -> str:
    """Message content as text: a string, or a list of {"type": "text", "text": ...} parts."""
    return content if isinstance(content, str) else "".join(part.text for part in content)


class Streams:
    """The Chunks of several engine requests (choices), merged into one asyncio queue."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests: list[Request] = []
        self.total = 0  # choices: one per sampled request, n per beam search

    def add(self, req: Request, first: int, choices: int) -> None:
        """``req``'s outputs are choices first .. first + choices - 1."""
        req.emit = self.emitter(first)
        self.requests.append(req)
        self.total += choices

    def emitter(self, first: int):
        def emit(chunk: Chunk) -> None:  # engine thread
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (first + chunk.index, chunk))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass
        return emit

    async def chunks(self) -> AsyncIterator[tuple[int, Chunk]]:
        """(choice index, Chunk) until every choice has finished."""
        left = self.total
        while left:
            index, chunk = await self.queue.get()
            if chunk.error:
                raise ApiError(500, chunk.error, kind="server_error")
            if chunk.finish_reason:
                left -= 1
            yield index, chunk

    def cancel(self) -> None:
        for r in self.requests:
            r.cancel()


# ---------------------------------------------------------------------------------------
# embeddings and distributions (run on the engine thread)
# ---------------------------------------------------------------------------------------
def embed(model, tokenizer, prompts: list[list[int]]) -> list[list[float]]:
    """Unit-length sentence embeddings of token-id inputs, pooled as the checkpoint says (a
    sentence encoder's own pooling, else the mean of the final hidden states); an encoder's
    [CLS] / [SEP] are added around each input, as it was trained."""
    from ..evaluation.embeddings import embed_ids
    return embed_ids(model, tokenizer, prompts).tolist()


def next_token_distribution(model, tokenizer, prompt: list[int] | Prompt, generated: list[int],
                            body: DistributionBody) -> dict:
    """The model's next-token distribution after ``prompt`` and the ``generated`` tokens, as its
    family's decoding State computes it during generation (a source and the target so far; Part A
    and the filling so far), and the one the sampler draws from after temperature, top-k and
    top-p (``filters.chain``, the chain decoding uses). A GLM's ``generated`` tokens are read as
    its first blank's filling (a completion does not show the [E] that ends a blank)."""
    device = next(model.parameters()).device
    state = start(model, [prompt], len(generated) + 1)
    for token in generated:
        state.append(torch.tensor([token], device=device))
    logits = state.logits  # (1, V)
    probs = logits.softmax(-1)[0]
    sampled = filters.chain(logits, body.temperature, body.top_k, body.top_p).softmax(-1)[0]
    order = [t for t, _ in top_alternatives(logits.log_softmax(-1), body.top_n)[0]]  # most likely first
    entropy = float(-(probs * probs.clamp(min=1e-30).log()).sum())
    return {"vocab_size": probs.shape[0], "kept": int((sampled > 0).sum()), "entropy": entropy,
            "tokens": [{"id": t, "token": tokenizer.token_text(t), "prob": float(probs[t]),
                        "sampled_prob": float(sampled[t])} for t in order]}


def generation_attention_json(model, tokenizer, prompt: Prompt, completion: list[int], steps: list[int]) -> dict:
    """The attention of the steps that drew ``completion``'s tokens ``steps``, as JSON: captured
    while the family's decoding State runs prompt and completion again
    (``inspect.attention.generation_attention``, the capture `tfamily viz attention` uses).

    tokens   every token the model read, in order: the prompt (a source, a GLM's Part A), the
             token the decoder starts from (<s>, [S]) where it has one, the completion
    steps    per generated token: ``query`` (the token whose position drew it), ``token`` (it),
             and per kind of attention ("cross": over the source; "self": the decoder's own
             tokens) ``keys`` [start, end) in ``tokens`` and ``weights[layer][head][key]``"""
    from ..inspect.attention import generation_attention
    seen = generation_attention(model, prompt, completion, steps)
    layers = max((m.probs.shape[0] for s in seen.steps for m in s.maps), default=0)
    heads = max((m.probs.shape[1] for s in seen.steps for m in s.maps), default=0)
    return {"object": "attention", "layers": layers, "heads": heads,
            "tokens": [{"id": t, "text": _token_text(tokenizer, t), "part": part}
                       for t, part in zip(seen.tokens, seen.parts)],
            "steps": [{"index": s.index, "query": s.query, "token": s.token,
                       "attention": [{"kind": m.kind, "keys": list(m.keys), "weights": m.probs.tolist()}
                                     for m in s.maps]} for s in seen.steps]}


def _token_text(tokenizer, token: int) -> str:
    try:
        return tokenizer.token_text(token)
    except (ValueError, KeyError, IndexError):  # an id of the model's vocabulary the tokenizer lacks
        return f"<{token}>"
