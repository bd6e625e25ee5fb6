"""OpenAI-compatible HTTP API over the engine, and the playground page.

    GET  /health                 engine state
    GET  /v1/models[/{id}]       the one served model
    POST /v1/completions         text completion (stream: server-sent events), logprobs
    POST /v1/chat/completions    chat under the checkpoint's template, logprobs / top_logprobs
    POST /v1/embeddings          mean-pooled, L2-normalised final hidden states
    POST /tfamily/distribution   one step's next-token distribution before / after the filters
    GET  /                       the playground (static HTML/JS)
    GET  /openapi.json, /docs    this API described (request bodies included), and browsable

With an API key (``create_app(..., api_key=...)``, ``tfamily serve --api-key``), every /v1 and
/tfamily route (and any unknown path) needs ``Authorization: Bearer KEY``, else 401; /health,
the page with its /static files and the docs stay open, and the page sends the key it is given.

Wire format follows the OpenAI API reference, so the official ``openai`` client works
unchanged. Bad input gets a 4xx with ``{"error": {"message", "type", "param", "code"}}``
naming the field; nothing else (no traceback) ever reaches the client.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import struct
import time
import uuid
from importlib import resources
from typing import Any, AsyncIterator, Literal

import torch
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..generation import filters
from ..generation.chat import DEFAULT_STOP, end_of_turn_ids, render_chat
from ..generation.decode import SamplingParams
from ..generation.fewshot import fewshot_messages, fewshot_prompt, fewshot_stop
from .engine import Chunk, Engine, Request, TokenInfo

log = logging.getLogger("tfamily.server")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more than any prompt that fits a context
MAX_STOP = 4  # as OpenAI
MAX_N = 16
MAX_LOGPROBS = 20
MAX_BATCH_INPUTS = 64  # prompts or embedding inputs per request
# Below these the fp32 sampling filters break (logits / t overflows to inf, a top_p under
# fp32's smallest normal rounds to 0 and drops every token: NaN probabilities), so they are
# read as their limits: temperature -> 0 (greedy, as vLLM does below 1e-5), top_p -> the
# most likely token only (what nucleus sampling keeps as p -> 0).
MIN_TEMPERATURE = filters.MIN_TEMPERATURE
MIN_TOP_P = 1e-6
SEED_RANGE = (-(2 ** 63), 2 ** 63 - 1)  # a seed torch.Generator takes (seed + n - 1 still does)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


# ---------------------------------------------------------------------------------------
# request bodies (unknown fields are ignored, as clients send optional extras)
# ---------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class StreamOptions(_Body):
    include_usage: bool = False


class FewShotExample(_Body):
    input: str
    output: str


class FewShot(_Body):
    """Extension: build the prompt from an instruction, examples and a query (see generation.fewshot)."""
    query: str
    examples: list[FewShotExample] = Field(default_factory=list, max_length=64)
    instruction: str = ""

    def example_dicts(self) -> list[dict[str, str]]:
        return [e.model_dump() for e in self.examples]


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # extension, as in vLLM
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    fewshot: FewShot | None = None
    return_token_ids: bool = False  # extension: token ids in each choice (the playground uses them)
    ignore_eos: bool = False  # extension, as in vLLM: run to max_tokens (benchmarks, load tests)


_NOT_NULL = {"not": {"type": "null"}}


class CompletionBody(_Sampling):
    # the document says what the handler checks: a prompt or a fewshot, not both
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["prompt"], "properties": {"prompt": _NOT_NULL}},
        {"required": ["fewshot"], "properties": {"fewshot": _NOT_NULL}}]})
    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    max_tokens: int | None = Field(default=16, gt=0)  # OpenAI's default for completions


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]


class ChatBody(_Sampling):
    # messages (at least one) or a fewshot, not both
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["messages"], "properties": {"messages": {"minItems": 1}}},
        {"required": ["fewshot"], "properties": {"fewshot": _NOT_NULL}}]})
    messages: list[Message] = Field(default_factory=list, max_length=256)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)


class EmbeddingBody(_Body):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class DistributionBody(_Body):
    model: str
    token_ids: list[int] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_n: int = Field(default=40, ge=1, le=1000)


async def parse_body(request: HTTPRequest, schema: type[BaseModel]) -> Any:
    """The JSON body as ``schema``, or an ApiError naming the offending field."""
    raw = await request.body()
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, _NotJSON) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # [[[[... nested past Python's stack: refuse it, do not crash on it
        raise ApiError(400, "the request body is not valid JSON here: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        # unions report the tried alternative in loc (e.g. stop.str); keep the field path. Of the
        # first field's errors (one per alternative of a union), the deepest says the most:
        # messages.0.content.0.type "should be 'text'" rather than messages.0.content "a string"
        errors = [([str(x) for x in err["loc"] if not _union_tag(x)], err["msg"]) for err in e.errors()]
        first = errors[0][0]
        loc, msg = max((err for err in errors if err[0][:len(first)] == first), key=lambda err: len(err[0]))
        param = ".".join(loc) or None
        raise ApiError(400, f"{param}: {msg}" if param else msg, param) from None


class _NotJSON(ValueError):
    pass


def _no_constant(name: str):
    """NaN and Infinity are not JSON (Python's json reads them by default)."""
    raise _NotJSON(f"{name} is not a JSON value")


def _union_tag(x) -> bool:
    """Whether a loc item names a union's alternative ("str", "list[int]", "list[TextPart]"), not a field."""
    return isinstance(x, str) and (x in {"str", "int", "bool", "float"} or "[" in x or x[:1].isupper())


# ---------------------------------------------------------------------------------------
# the service: turns bodies into engine requests
# ---------------------------------------------------------------------------------------
class Service:
    def __init__(self, engine: Engine, tokenizer, model_name: str, chat_template: str | None):
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.template = chat_template
        self.context = engine.context
        self.vocab_size = engine.model.cfg.vocab_size
        cfg = engine.model.cfg
        self.arch = cfg.arch
        self.generative = cfg.head == "lm" and cfg.arch != "encoder"  # encoders only embed
        self.created = int(time.time())

    # ---------------------------------------------------------------- checks
    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")

    def check_common(self, body: _Sampling) -> tuple[str, ...]:
        self.check_model(body.model)
        if not self.generative:
            raise ApiError(400, f"{self.model_name} is an encoder (arch {self.arch!r}); it serves /v1/embeddings, "
                                "not completions", "model")
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

    def encode_prompt(self, prompt, param: str) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(prompt)
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise ApiError(400, f"{param}: token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})", param)
        if not ids:  # an empty prompt starts from the start (or end-of-text) token, as generation.text does
            start = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
            if start is None:
                raise ApiError(400, f"{param}: the prompt is empty and the tokenizer has no start token", param)
            ids = [start]
        if len(ids) >= self.context:
            raise ApiError(400, f"{param}: the prompt is {len(ids)} tokens; the model's context is {self.context} "
                           "tokens and at least one must be left to generate", param, "context_length_exceeded")
        return ids

    def max_new(self, body: _Sampling, n_prompt: int, default: int) -> int:
        asked = body.max_completion_tokens or body.max_tokens
        room = self.context - n_prompt
        if asked is None:
            return min(default, room)
        field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        if asked > room:
            raise ApiError(400, f"{field}: {asked} tokens do not fit: the prompt is {n_prompt} tokens and the "
                           f"context {self.context} (at most {room})", field, "context_length_exceeded")
        return asked

    def params(self, body: _Sampling, max_new: int, alternatives: int, stop_ids, index: int) -> SamplingParams:
        seed = None if body.seed is None else body.seed + index  # n choices differ, each reproducible
        temperature, top_k, top_p = sampling_filters(body.temperature, body.top_k, body.top_p)
        return SamplingParams(max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              top_alternatives=alternatives, stop_token_ids=tuple(stop_ids))

    # ---------------------------------------------------------------- prompts
    def completion_prompts(self, body: CompletionBody) -> tuple[list[list[int]], tuple[str, ...]]:
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

    def _fewshot_text(self, fs: FewShot) -> str:
        try:
            return fewshot_prompt(fs.query, fs.example_dicts(), fs.instruction)
        except ValueError as e:
            raise ApiError(400, f"fewshot.{e}", "fewshot.examples") from None

    def chat_prompt(self, body: ChatBody) -> tuple[list[int], tuple[str, ...], tuple[int, ...]]:
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
        stop = () if self.template else DEFAULT_STOP
        stop_ids = set(end_of_turn_ids(self.tokenizer))
        if self.tokenizer.eos_id is not None:
            stop_ids.add(self.tokenizer.eos_id)
        return self.encode_prompt(text, "messages"), stop, tuple(sorted(stop_ids))

    # ---------------------------------------------------------------- running
    def start(self, prompts: list[list[int]], body: _Sampling, alternatives: int, stop: tuple[str, ...],
              stop_ids, default_max: int) -> tuple["Streams", list[int]]:
        """Submit every (prompt, choice) pair; returns the merged output and the prompt lengths."""
        maxes = [self.max_new(body, len(p), default_max) for p in prompts]  # check all before starting any
        streams = Streams()
        for p_i, ids in enumerate(prompts):
            for c in range(body.n):
                req = Request(ids, self.params(body, maxes[p_i], alternatives, stop_ids, c),
                              streams.emitter(p_i * body.n + c), stop)
                streams.requests.append(req)
                self.engine.submit(req)
        return streams, [len(p) for p in prompts]

    async def run_job(self, fn):
        """Run ``fn`` on the engine thread (which owns the model) without blocking the event loop."""
        out = self.engine.call(fn)
        result, error = await asyncio.get_running_loop().run_in_executor(None, out.get)
        if error is not None:
            raise error
        return result


def sampling_filters(temperature: float, top_k: int | None, top_p: float) -> tuple[float, int | None, float | None]:
    """(temperature, top_k, top_p) as the sampler should get them: off where they do nothing,
    and the tiny values fp32 cannot compute with replaced by their limits (see MIN_TEMPERATURE)."""
    if temperature < MIN_TEMPERATURE:
        temperature = 0.0
    top_k = top_k or None
    if top_p < MIN_TOP_P:
        top_k, top_p = 1, 1.0
    return temperature, top_k, (top_p if top_p < 1 else None)


def _text_content(content: str | list[TextPart]) -> str:
    """Message content as text: a string, or a list of {"type": "text", "text": ...} parts."""
    return content if isinstance(content, str) else "".join(part.text for part in content)


class Streams:
    """The Chunks of several engine requests (choices), merged into one asyncio queue."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests: list[Request] = []

    def emitter(self, index: int):
        def emit(chunk: Chunk) -> None:  # engine thread
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, chunk))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass
        return emit

    async def chunks(self) -> AsyncIterator[tuple[int, Chunk]]:
        """(choice index, Chunk) until every choice has finished."""
        left = len(self.requests)
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
# response formatting
# ---------------------------------------------------------------------------------------
def _lp(x: float) -> float:
    return x if math.isfinite(x) else -9999.0


def completion_logprobs(tokens: list[TokenInfo], offset: int) -> dict:
    """OpenAI's legacy completions logprobs: parallel lists, top alternatives as {text: logprob}."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [_lp(t.logprob) for t in tokens],
            "top_logprobs": [{text: _lp(lp) for _, text, lp in t.top} for t in tokens], "text_offset": offsets}


def chat_logprobs(tokens: list[TokenInfo]) -> dict:
    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": _lp(lp), "bytes": list(text.encode("utf-8"))}
    return {"content": [{**entry(t.text, t.logprob), "top_logprobs": [entry(x, lp) for _, x, lp in t.top]}
                        for t in tokens]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------
def create_app(engine: Engine, tokenizer, model_name: str, chat_template: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, api_key: str | None = None) -> FastAPI:
    """The app. ``api_key``: when set (non-empty), the API routes answer 401 without
    ``Authorization: Bearer <api_key>``."""
    if api_key:
        check_api_key(api_key)  # at once, not at the first request
    svc = Service(engine, tokenizer, model_name, chat_template)
    app = FastAPI(title="tfamily", docs_url="/docs", redoc_url=None)
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(_, e: ApiError):
        return error_response(e.status, e.message, e.param, e.code, e.kind)

    @app.exception_handler(Exception)
    async def _unexpected(_, e: Exception):  # logged here; the client gets no trace
        log.exception("unexpected error")
        return error_response(500, "internal server error", kind="server_error")

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, e: StarletteHTTPException):  # 404 / 405 in the same JSON shape
        return error_response(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if api_key:  # added last, so outermost: a request without the key is refused before its body is read
        app.add_middleware(ApiKeyAuth, key=api_key)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": svc.model_name, "running": engine.active,
                "waiting": engine.waiting, "max_batch": engine.max_batch, "context": svc.context,
                "decode_steps": engine.steps}

    def model_card() -> dict:
        return {"id": svc.model_name, "object": "model", "created": svc.created, "owned_by": "tfamily",
                "context_length": svc.context}

    @app.get("/v1/models", responses=_responses())
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", responses=_responses())
    async def one_model(name: str):
        svc.check_model(name)
        return model_card()

    @app.post("/v1/completions", openapi_extra=_body_doc(CompletionBody), responses=_responses(True))
    async def completions(request: HTTPRequest):
        body: CompletionBody = await parse_body(request, CompletionBody)
        stop = svc.check_common(body)
        if body.echo:
            raise ApiError(400, "echo is not supported", "echo")
        prompts, extra_stop = svc.completion_prompts(body)
        eos = (tokenizer.eos_id,) if tokenizer.eos_id is not None and not body.ignore_eos else ()
        streams, lengths = svc.start(prompts, body, body.logprobs or 0, stop + extra_stop, eos, default_max=16)
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": svc.model_name}
        want_lp = body.logprobs is not None
        prompt_total = sum(lengths) * body.n
        if body.stream:
            return _stream(streams, _completion_chunk(meta, want_lp, body, prompts), body, prompt_total, meta)
        texts, tokens, finish, counts = await _collect(streams)
        choices = [{"index": i, "text": texts[i], "finish_reason": finish[i],
                    "logprobs": completion_logprobs(tokens[i], 0) if want_lp else None,
                    **({"token_ids": [t.id for t in tokens[i]]} if body.return_token_ids else {})}
                   for i in range(len(texts))]
        return {**meta, "choices": choices, "usage": usage(prompt_total, sum(counts))}

    @app.post("/v1/chat/completions", openapi_extra=_body_doc(ChatBody), responses=_responses(True))
    async def chat(request: HTTPRequest):
        body: ChatBody = await parse_body(request, ChatBody)
        stop = svc.check_common(body)
        if body.top_logprobs and not body.logprobs:
            raise ApiError(400, "top_logprobs: requires logprobs to be true", "top_logprobs")
        ids, template_stop, stop_ids = svc.chat_prompt(body)
        stop_ids = () if body.ignore_eos else stop_ids
        alternatives = (body.top_logprobs or 0) if body.logprobs else 0
        streams, lengths = svc.start([ids], body, alternatives, stop + template_stop, stop_ids,
                                     default_max=svc.context)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": svc.model_name}
        prompt_total = lengths[0] * body.n
        if body.stream:
            return _stream(streams, _chat_chunk(meta, body, ids), body, prompt_total,
                           {**meta, "object": "chat.completion.chunk"}, first=_chat_first(meta, body.n))
        texts, tokens, finish, counts = await _collect(streams)
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "finish_reason": finish[i],
                    "logprobs": chat_logprobs(tokens[i]) if body.logprobs else None,
                    **({"token_ids": [t.id for t in tokens[i]]} if body.return_token_ids else {})}
                   for i in range(len(texts))]
        return {**meta, "object": "chat.completion", "choices": choices,
                "usage": usage(prompt_total, sum(counts)),
                **({"prompt_token_ids": ids} if body.return_token_ids else {})}

    @app.post("/v1/embeddings", openapi_extra=_body_doc(EmbeddingBody), responses=_responses(False))
    async def embeddings(request: HTTPRequest):
        body: EmbeddingBody = await parse_body(request, EmbeddingBody)
        svc.check_model(body.model)
        inputs = body.input
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs or len(inputs) > MAX_BATCH_INPUTS:
            raise ApiError(400, f"input: between 1 and {MAX_BATCH_INPUTS} inputs", "input")
        encoded = [svc.encode_prompt(x, "input") for x in inputs]
        vectors = await svc.run_job(lambda: embed(engine.model, tokenizer, encoded))
        if body.dimensions is not None and not 0 < body.dimensions <= len(vectors[0]):
            raise ApiError(400, f"dimensions: must be in [1, {len(vectors[0])}]", "dimensions")
        if body.dimensions:
            vectors = [_normalise(v[:body.dimensions]) for v in vectors]
        return {"object": "list", "model": svc.model_name,
                "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(map(len, encoded)), "total_tokens": sum(map(len, encoded))}}

    @app.post("/tfamily/distribution", openapi_extra=_body_doc(DistributionBody), responses=_responses(False))
    async def distribution(request: HTTPRequest):
        body: DistributionBody = await parse_body(request, DistributionBody)
        svc.check_model(body.model)
        ids = svc.encode_prompt(body.token_ids[-svc.context + 1:], "token_ids")
        return await svc.run_job(lambda: next_token_distribution(engine.model, tokenizer, ids, body))

    static = resources.files("tfamily.server") / "static"

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", response_class=Response, responses={
        200: {"description": "the file",
              "content": {t: {"schema": {"type": "string"}} for t in _STATIC_TYPES.values()}},
        404: _ERROR_DOC})
    async def static_file(name: str):
        ext = name[name.rfind("."):] if "." in name else ""
        f = static / name
        if "/" in name or ext not in _STATIC_TYPES or not f.is_file():
            raise ApiError(404, f"no static file {name!r}", code="not_found")
        return Response(f.read_text(encoding="utf-8"), media_type=_STATIC_TYPES[ext])

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, svc, bool(api_key))
        return app.openapi_schema

    app.openapi = openapi
    return app


# ---------------------------------------------------------------------------------------
# the OpenAPI document: the routes read their bodies themselves (to answer errors in
# OpenAI's shape), so the bodies are declared here, from the same pydantic models
# ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
_ERROR_DOC = {"model": ErrorResponse, "description": "error (the field at fault in error.param)"}
_BODY_MODELS = (CompletionBody, ChatBody, EmbeddingBody, DistributionBody)
_ONLY_VALUE = {"frequency_penalty": 0, "presence_penalty": 0, "echo": False}


def _body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _responses(streams: bool = False) -> dict:
    """Error responses of an API route; a streaming route's 200 may also be server-sent events."""
    out: dict = {400: _ERROR_DOC, 401: {**_ERROR_DOC, "description": "missing or wrong API key"},
                 404: _ERROR_DOC, 413: _ERROR_DOC}
    if streams:
        out[200] = {"description": "the completion, or with stream=true server-sent events",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    return out


def openapi_document(app: FastAPI, svc: Service, keyed: bool) -> dict:
    """FastAPI's document plus the request bodies, narrowed to what this server accepts (its
    one model name, token ids inside its vocabulary, max_tokens inside its context), so that a
    client, or a fuzzer, reading it builds requests this server can run."""
    from fastapi.openapi.utils import get_openapi
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="OpenAI-compatible API of one tfamily checkpoint")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in _BODY_MODELS:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(s.pop("$defs", {}))
        schemas[model.__name__] = s
    for model in _BODY_MODELS:
        props = schemas[model.__name__]["properties"]
        props["model"] = {**props["model"], "enum": [svc.model_name]}
        _narrow(props, svc)
        for name in ("prompt", "input", "token_ids"):
            if name in props:
                _bound_integers(props[name], 0, svc.vocab_size - 1)
        for name in ("max_tokens", "max_completion_tokens"):
            if name in props:
                _bound_integers(props[name], None, svc.context - 1)
        if "top_k" in props:
            _bound_integers(props["top_k"], None, svc.vocab_size)
        for name, only in _ONLY_VALUE.items():  # accepted for compatibility, only at their default
            if name in props:
                props[name] = {**props[name], "enum": [only], "description": f"only {json.dumps(only)} is supported"}
    static = resources.files("tfamily.server") / "static"
    files = sorted(f.name for f in static.iterdir() if f.name.endswith(tuple(_STATIC_TYPES)))
    for path, names in (("/v1/models/{name}", [svc.model_name]), ("/static/{name}", files)):
        for op in doc["paths"].get(path, {}).values():  # the names that exist (others: 404)
            for param in op.get("parameters", []):
                param["schema"] = {**param["schema"], "enum": names}
    if keyed:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)  # no route answers FastAPI's 422: errors are 400s
            if keyed and _needs_key(path):
                op["security"] = [{"bearer": []}]
            elif not keyed:
                op.get("responses", {}).pop("401", None)
    return doc


def _narrow(props: dict, svc: Service) -> None:
    """The limits the handlers check, stated in the document (lists of prompts and inputs,
    stop strings, embedding dimensions)."""
    if "stop" in props:
        props["stop"] = {**props["stop"], "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOP}, {"type": "null"}]}
    for name in ("prompt", "input"):  # a batch: 1 .. MAX_BATCH_INPUTS; one prompt of ids: < context
        for alt in props.get(name, {}).get("anyOf", []):
            if alt.get("type") == "array":
                single = alt.get("items", {}).get("type") == "integer"
                alt.update(minItems=1, maxItems=svc.context - 1 if single else MAX_BATCH_INPUTS)
    if "dimensions" in props:
        _bound_integers(props["dimensions"], 1, svc.engine.model.cfg.d_model)


def _bound_integers(schema: Any, low: int | None, high: int | None) -> None:
    """Set minimum / maximum on every integer schema inside ``schema`` (unions, arrays)."""
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            if low is not None:
                schema["minimum"] = max(low, schema.get("minimum", low))
            if high is not None:
                schema["maximum"] = min(high, schema.get("maximum", high))
        for v in schema.values():
            _bound_integers(v, low, high)
    elif isinstance(schema, list):
        for v in schema:
            _bound_integers(v, low, high)


# ---------------------------------------------------------------------------------------
# streaming and collecting
# ---------------------------------------------------------------------------------------
async def _collect(streams: Streams):
    n = len(streams.requests)
    texts, tokens, finish, counts = [""] * n, [[] for _ in range(n)], [None] * n, [0] * n
    try:
        async for i, chunk in streams.chunks():
            texts[i] += chunk.text
            tokens[i].extend(chunk.tokens)
            counts[i] = max(counts[i], chunk.completion_tokens)
            if chunk.finish_reason:
                finish[i] = chunk.finish_reason
    finally:  # the client went away before the end: free the slots
        streams.cancel()
    return texts, tokens, finish, counts


def _stream(streams: Streams, make_chunk, body: _Sampling, prompt_total: int, meta: dict,
            first: list[dict] | None = None) -> StreamingResponse:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``. A client that
    disconnects cancels the generator, and ``finally`` frees its slots."""
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events():
        counts = [0] * len(streams.requests)
        offsets = [0] * len(streams.requests)
        try:
            for item in first or []:
                yield sse(item)
            async for i, chunk in streams.chunks():
                counts[i] = max(counts[i], chunk.completion_tokens)
                yield sse(make_chunk(i, chunk, offsets[i]))
                offsets[i] += len(chunk.text)
            if include_usage:
                yield sse({**meta, "choices": [], "usage": usage(prompt_total, sum(counts))})
            yield sse("[DONE]")
        except ApiError as e:  # the engine failed mid-stream: say so in the stream's own format
            yield sse({"error": {"message": e.message, "type": e.kind, "param": None, "code": None}})
        finally:
            streams.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _finish(chunk: Chunk) -> str | None:
    return "stop" if chunk.finish_reason == "cancelled" else chunk.finish_reason


def _completion_chunk(meta: dict, want_lp: bool, body: CompletionBody, prompts: list[list[int]]):
    def make(i: int, chunk: Chunk, offset: int) -> dict:
        choice = {"index": i, "text": chunk.text, "finish_reason": _finish(chunk),
                  "logprobs": completion_logprobs(chunk.tokens, offset) if want_lp else None}
        if body.return_token_ids:
            choice["token_ids"] = [t.id for t in chunk.tokens]
            if offset == 0:
                choice["prompt_token_ids"] = prompts[i // body.n]
        return {**meta, "choices": [choice]}
    return make


def _chat_first(meta: dict, n: int) -> list[dict]:
    """OpenAI opens each choice's stream with the assistant role and empty content."""
    return [{**meta, "object": "chat.completion.chunk",
             "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}]} for i in range(n)]


def _chat_chunk(meta: dict, body: ChatBody, prompt_ids: list[int]):
    def make(i: int, chunk: Chunk, offset: int) -> dict:
        delta = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
        choice = {"index": i, "delta": delta, "finish_reason": _finish(chunk),
                  "logprobs": chat_logprobs(chunk.tokens) if body.logprobs else None}
        if body.return_token_ids:
            choice["token_ids"] = [t.id for t in chunk.tokens]
            if offset == 0:
                choice["prompt_token_ids"] = prompt_ids
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}
    return make


# ---------------------------------------------------------------------------------------
# embeddings and distributions (run on the engine thread)
# ---------------------------------------------------------------------------------------
def embed(model, tokenizer, prompts: list[list[int]]) -> list[list[float]]:
    """Unit-length sentence embeddings of token-id inputs, pooled as the checkpoint says (a
    sentence encoder's own pooling, else the mean of the final hidden states); an encoder's
    [CLS] / [SEP] are added around each input, as it was trained."""
    from ..evaluation.embeddings import embed_ids
    return embed_ids(model, tokenizer, prompts).tolist()


def _encode_vector(v: list[float], fmt: str) -> list[float] | str:
    """"float": a JSON list; "base64": little-endian float32 bytes (the openai client's default)."""
    if fmt == "float":
        return v
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")


def _normalise(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def next_token_distribution(model, tokenizer, ids: list[int], body: DistributionBody) -> dict:
    """The model's next-token distribution after ``ids``, and the one the sampler draws from
    after temperature, top-k and top-p (the same filters the engine applies)."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    logits = model(x, last_only=True).logits[:, -1].float()  # (1, V)
    probs = logits.softmax(-1)[0]
    f = logits
    temperature, top_k, top_p = sampling_filters(body.temperature, body.top_k, body.top_p)
    if temperature == 0:
        f = torch.full_like(logits, float("-inf")).scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
    else:
        f = filters.temperature(f, temperature)
        if top_k:
            f = filters.top_k(f, top_k)
        if top_p is not None:
            f = filters.top_p(f, top_p)
    sampled = f.softmax(-1)[0]
    order = torch.argsort(probs, descending=True)[:body.top_n].tolist()
    entropy = float(-(probs * probs.clamp(min=1e-30).log()).sum())
    return {"vocab_size": probs.shape[0], "kept": int((sampled > 0).sum()), "entropy": entropy,
            "tokens": [{"id": t, "token": tokenizer.token_text(t), "prob": float(probs[t]),
                        "sampled_prob": float(sampled[t])} for t in order]}


# ---------------------------------------------------------------------------------------
# API key
# ---------------------------------------------------------------------------------------
_OPEN_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


def _needs_key(path: str) -> bool:
    """Everything needs the key (the API under /v1 and /tfamily, and any path not known here)
    except /health, the page, its /static files and the docs."""
    return not (path in _OPEN_PATHS or path.startswith("/static/"))


def check_api_key(key: str) -> str:
    """``key`` if a client can send it in a header: printable ASCII, no spaces."""
    if not key or not all(33 <= ord(c) <= 126 for c in key):
        raise ValueError("api_key: must be non-empty printable ASCII without spaces (it travels in an HTTP header)")
    return key


class ApiKeyAuth:
    """ASGI middleware: an API request without ``Authorization: Bearer <key>`` gets OpenAI's
    401 before its body is read. The key is compared in constant time."""

    def __init__(self, app, key: str):
        self.app, self.key = app, check_api_key(key).encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _needs_key(scope.get("path", "")):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        if not header:
            message = ("You didn't provide an API key. You need to provide your API key in an Authorization "
                       "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        elif scheme.lower() != b"bearer":
            message = "The Authorization header must use Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        else:
            message = "Incorrect API key provided."
        response = error_response(401, message, code="invalid_api_key")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------
# body size limit
# ---------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before any of it is parsed;
    declared (Content-Length) or not (chunked). After the body, ``receive`` passes through,
    so a streaming handler still hears the client disconnect."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._reject(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._reject(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send):
        response = error_response(413, f"the request body is larger than {self.limit} bytes", code="body_too_large")
        await response({"type": "http"}, None, send)
