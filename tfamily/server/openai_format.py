"""Engine output in OpenAI's wire format: per-token logprobs, usage, choices and server-sent events.

Every family's output reaches a client here, as Chunks of Steps (``generation.step``: the token,
its log-probability, the top alternatives, each with its text), so the official ``openai``
client and the playground page read one format whatever the model.
"""

from __future__ import annotations

import base64
import json
import math
import struct

from fastapi.responses import StreamingResponse

from ..generation.step import Step
from .engine import Chunk
from .middleware import ApiError


def _lp(x: float) -> float:
    return x if math.isfinite(x) else -9999.0


def _texts(step: Step) -> tuple[str, list[str]]:
    return step.text or "", step.top_text or ["" for _ in step.top]


def completion_logprobs(tokens: list[Step], offset: int) -> dict:
    """OpenAI's legacy completions logprobs: parallel lists, top alternatives as {text: logprob}."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text or "")
    top = []
    for t in tokens:
        _, names = _texts(t)
        top.append({name: _lp(lp) for name, (_, lp) in zip(names, t.top)})
    return {"tokens": [t.text or "" for t in tokens], "token_logprobs": [_lp(t.logprob) for t in tokens],
            "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(tokens: list[Step]) -> dict:
    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": _lp(lp), "bytes": list(text.encode("utf-8"))}
    content = []
    for t in tokens:
        text, names = _texts(t)
        content.append({**entry(text, t.logprob), "top_logprobs": [entry(x, lp) for x, (_, lp) in zip(names, t.top)]})
    return {"content": content}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def finish_reason(chunk: Chunk) -> str | None:
    return "stop" if chunk.finish_reason == "cancelled" else chunk.finish_reason


# ---------------------------------------------------------------------------------------
# choices
# ---------------------------------------------------------------------------------------
def completion_chunk(meta: dict, want_lp: bool, body, prompts: list[list[int]]):
    """make(choice index, chunk, text offset) -> one streamed completion event."""
    def make(i: int, chunk: Chunk, offset: int) -> dict:
        choice = {"index": i, "text": chunk.text, "finish_reason": finish_reason(chunk),
                  "logprobs": completion_logprobs(chunk.tokens, offset) if want_lp else None}
        if body.return_token_ids:
            choice["token_ids"] = [t.token for t in chunk.tokens]
            if offset == 0:
                choice["prompt_token_ids"] = prompts[i // body.n]
        return {**meta, "choices": [choice]}
    return make


def chat_first(meta: dict, n: int) -> list[dict]:
    """OpenAI opens each choice's stream with the assistant role and empty content."""
    return [{**meta, "object": "chat.completion.chunk",
             "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}]} for i in range(n)]


def chat_chunk(meta: dict, body, prompt_ids: list[int]):
    def make(i: int, chunk: Chunk, offset: int) -> dict:
        delta = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
        choice = {"index": i, "delta": delta, "finish_reason": finish_reason(chunk),
                  "logprobs": chat_logprobs(chunk.tokens) if body.logprobs else None}
        if body.return_token_ids:
            choice["token_ids"] = [t.token for t in chunk.tokens]
            if offset == 0:
                choice["prompt_token_ids"] = prompt_ids
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}
    return make


# ---------------------------------------------------------------------------------------
# collecting and streaming
# ---------------------------------------------------------------------------------------
async def collect(streams):
    """(texts, steps, finish reasons, token counts) of every choice, once all have finished."""
    n = streams.total
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


def stream(streams, make_chunk, body, prompt_total: int, meta: dict, first: list[dict] | None = None
           ) -> StreamingResponse:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``. A client that
    disconnects cancels the generator, and ``finally`` frees its slots."""
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events():
        counts = [0] * streams.total
        offsets = [0] * streams.total
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


# ---------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------
def encode_vector(v: list[float], fmt: str) -> list[float] | str:
    """"float": a JSON list; "base64": little-endian float32 bytes (the openai client's default)."""
    if fmt == "float":
        return v
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")


def normalise(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]
