"""OpenAI-compatible HTTP API over the engine, and the playground page: the app and its routes.

    GET  /health                 engine state
    GET  /v1/models[/{id}]       the one served model
    POST /v1/completions         text completion (stream: server-sent events), logprobs
    POST /v1/chat/completions    chat under the checkpoint's template, logprobs / top_logprobs
    POST /v1/embeddings          mean-pooled, L2-normalised final hidden states
    POST /tfamily/distribution   one step's next-token distribution before / after the filters
    POST /tfamily/attention      the attention of the steps that generated a completion, per layer and head
    GET  /                       the playground (static HTML/JS)
    GET  /openapi.json, /docs    this API described (request bodies included), and browsable

Every generative family is served the same way (``service.py`` reads a prompt as the family
does); extensions beside OpenAI's fields: ``use_beam_search`` (n beams, the n best returned),
``length_penalty``, ``top_k``, ``ignore_eos``, ``return_token_ids``, ``fewshot``. Wire format
follows the OpenAI API reference (``openai_format.py``), so the official ``openai`` client works
unchanged; bodies are ``schemas.py``, auth, body limit and errors ``middleware.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from .engine import Engine
from .middleware import (MAX_BODY_BYTES, ApiError, ApiKeyAuth, BodyLimit, check_api_key, install_error_handlers,
                         needs_key)
from .openai_format import (chat_chunk, chat_first, chat_logprobs, collect, completion_chunk, completion_logprobs,
                            encode_vector, normalise, stream, usage)
from .schemas import (BODY_MODELS, MAX_BATCH_INPUTS, MAX_STOP, AttentionBody, ChatBody, CompletionBody,
                      DistributionBody, EmbeddingBody, ErrorResponse, parse_body)
from .service import Service, embed, generation_attention_json, next_token_distribution


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

    install_error_handlers(app)
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

    @app.get("/v1/models", responses=responses_doc())
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", responses=responses_doc())
    async def one_model(name: str):
        svc.check_model(name)
        return model_card()

    @app.post("/v1/completions", openapi_extra=body_doc(CompletionBody), responses=responses_doc(True))
    async def completions(request: HTTPRequest):
        body: CompletionBody = await parse_body(request, CompletionBody)
        stop = svc.check_common(body)
        if body.echo:
            raise ApiError(400, "echo is not supported", "echo")
        prompts, extra_stop = svc.completion_prompts(body)
        streams, lengths = svc.start(prompts, body, body.logprobs or 0, stop + extra_stop, svc.stop_ids(body),
                                     default_max=16)
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": svc.model_name}
        want_lp = body.logprobs is not None
        prompt_total = sum(lengths) * body.n
        if body.stream:
            return stream(streams, completion_chunk(meta, want_lp, body, [p.ids for p in prompts]), body,
                          prompt_total, meta)
        texts, tokens, finish, counts = await collect(streams)
        choices = [{"index": i, "text": texts[i], "finish_reason": finish[i],
                    "logprobs": completion_logprobs(tokens[i], 0) if want_lp else None,
                    **({"token_ids": [t.token for t in tokens[i]]} if body.return_token_ids else {})}
                   for i in range(len(texts))]
        return {**meta, "choices": choices, "usage": usage(prompt_total, sum(counts))}

    @app.post("/v1/chat/completions", openapi_extra=body_doc(ChatBody), responses=responses_doc(True))
    async def chat(request: HTTPRequest):
        body: ChatBody = await parse_body(request, ChatBody)
        stop = svc.check_common(body)
        if body.top_logprobs and not body.logprobs:
            raise ApiError(400, "top_logprobs: requires logprobs to be true", "top_logprobs")
        prompt, template_stop, stop_ids = svc.chat_prompt(body)
        stop_ids = () if body.ignore_eos else stop_ids
        alternatives = (body.top_logprobs or 0) if body.logprobs else 0
        streams, lengths = svc.start([prompt], body, alternatives, stop + template_stop, stop_ids,
                                     default_max=svc.context)
        ids = prompt.ids
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": svc.model_name}
        prompt_total = lengths[0] * body.n
        if body.stream:
            return stream(streams, chat_chunk(meta, body, ids), body, prompt_total,
                          {**meta, "object": "chat.completion.chunk"}, first=chat_first(meta, body.n))
        texts, tokens, finish, counts = await collect(streams)
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "finish_reason": finish[i],
                    "logprobs": chat_logprobs(tokens[i]) if body.logprobs else None,
                    **({"token_ids": [t.token for t in tokens[i]]} if body.return_token_ids else {})}
                   for i in range(len(texts))]
        return {**meta, "object": "chat.completion", "choices": choices,
                "usage": usage(prompt_total, sum(counts)),
                **({"prompt_token_ids": ids} if body.return_token_ids else {})}

    @app.post("/v1/embeddings", openapi_extra=body_doc(EmbeddingBody), responses=responses_doc(False))
    async def embeddings(request: HTTPRequest):
        body: EmbeddingBody = await parse_body(request, EmbeddingBody)
        svc.check_model(body.model)
        inputs = body.input
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs or len(inputs) > MAX_BATCH_INPUTS:
            raise ApiError(400, f"input: between 1 and {MAX_BATCH_INPUTS} inputs", "input")
        encoded = [svc.encode_ids(x, "input") for x in inputs]
        vectors = await svc.run_job(lambda: embed(engine.model, tokenizer, encoded))
        if body.dimensions is not None and not 0 < body.dimensions <= len(vectors[0]):
            raise ApiError(400, f"dimensions: must be in [1, {len(vectors[0])}]", "dimensions")
        if body.dimensions:
            vectors = [normalise(v[:body.dimensions]) for v in vectors]
        return {"object": "list", "model": svc.model_name,
                "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(map(len, encoded)), "total_tokens": sum(map(len, encoded))}}

    @app.post("/tfamily/distribution", openapi_extra=body_doc(DistributionBody), responses=responses_doc(False))
    async def distribution(request: HTTPRequest):
        body: DistributionBody = await parse_body(request, DistributionBody)
        svc.check_model(body.model)
        if not svc.generative:
            raise ApiError(400, f"{svc.model_name} does not generate text: it has no next-token distribution", "model")
        split = body.prompt_length if body.prompt_length is not None else len(body.token_ids)
        prompt = svc.check_ids(body.token_ids[:split], "token_ids")
        generated = svc.check_ids(body.token_ids[split:], "token_ids")
        if not generated:  # all prompt: read as completions read it, its last tokens within the context
            prompt = svc.encode_prompt(svc.encode_ids(prompt[-svc.context + 1:], "token_ids"), "token_ids")
        else:
            prompt = svc.encode_prompt(prompt, "prompt_length")
            if len(generated) > svc.states.room(svc.cfg, prompt):
                raise ApiError(400, f"prompt_length: {len(generated)} generated tokens do not fit after a prompt "
                                    f"of {len(prompt)} tokens", "prompt_length")
        try:
            return await svc.run_job(lambda: next_token_distribution(engine.model, tokenizer, prompt, generated, body))
        except ValueError as e:  # the family's State refused these tokens
            raise ApiError(400, f"token_ids: {e}", "token_ids") from None

    @app.post("/tfamily/attention", openapi_extra=body_doc(AttentionBody), responses=responses_doc(False))
    async def attention(request: HTTPRequest):
        body: AttentionBody = await parse_body(request, AttentionBody)
        prompt, completion, steps = svc.attention_request(body)
        try:
            data = await svc.run_job(lambda: generation_attention_json(engine.model, tokenizer, prompt, completion,
                                                                       steps))
        except ValueError as e:  # the family's State refused these tokens
            raise ApiError(400, f"completion_ids: {e}", "completion_ids") from None
        # JSONResponse, not a dict: FastAPI's encoder would walk every weight one by one
        return JSONResponse({"model": svc.model_name, "family": svc.family.name, **data})

    static = resources.files("tfamily.server") / "static"

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", response_class=Response, responses={
        200: {"description": "the file",
              "content": {t: {"schema": {"type": "string"}} for t in STATIC_TYPES.values()}},
        404: ERROR_DOC})
    async def static_file(name: str):
        ext = name[name.rfind("."):] if "." in name else ""
        f = static / name
        if "/" in name or ext not in STATIC_TYPES or not f.is_file():
            raise ApiError(404, f"no static file {name!r}", code="not_found")
        return Response(f.read_text(encoding="utf-8"), media_type=STATIC_TYPES[ext])

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
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
ERROR_DOC = {"model": ErrorResponse, "description": "error (the field at fault in error.param)"}
_ONLY_VALUE = {"frequency_penalty": 0, "presence_penalty": 0, "echo": False}


def body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def responses_doc(streams: bool = False) -> dict:
    """Error responses of an API route; a streaming route's 200 may also be server-sent events."""
    out: dict = {400: ERROR_DOC, 401: {**ERROR_DOC, "description": "missing or wrong API key"},
                 404: ERROR_DOC, 413: ERROR_DOC}
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
    for model in BODY_MODELS:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(s.pop("$defs", {}))
        schemas[model.__name__] = s
    for model in BODY_MODELS:
        props = schemas[model.__name__]["properties"]
        props["model"] = {**props["model"], "enum": [svc.model_name]}
        _narrow(props, svc)
        for name in ("prompt", "input", "token_ids", "completion_ids"):
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
    files = sorted(f.name for f in static.iterdir() if f.name.endswith(tuple(STATIC_TYPES)))
    for path, names in (("/v1/models/{name}", [svc.model_name]), ("/static/{name}", files)):
        for op in doc["paths"].get(path, {}).values():  # the names that exist (others: 404)
            for param in op.get("parameters", []):
                param["schema"] = {**param["schema"], "enum": names}
    if keyed:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)  # no route answers FastAPI's 422: errors are 400s
            if keyed and needs_key(path):
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
    if "completion_ids" in props:  # generated tokens fit the context after at least one prompt token
        props["completion_ids"] = {**props["completion_ids"], "maxItems": svc.context - 1}
    if "steps" in props:  # indices of generated tokens
        _bound_integers(props["steps"], 0, svc.context - 2)


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
