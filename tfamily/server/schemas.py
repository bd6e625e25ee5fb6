"""Request bodies (pydantic), each field as the OpenAI API reference has it, plus the
extensions the page and vLLM users know; and reading a body into one, or a 400 naming the field.

Unknown fields are ignored, as clients send optional extras.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Request as HTTPRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .middleware import ApiError

MAX_STOP = 4  # as OpenAI
MAX_N = 16
MAX_LOGPROBS = 20
MAX_BATCH_INPUTS = 64  # prompts or embedding inputs per request
SEED_RANGE = (-(2 ** 63), 2 ** 63 - 1)  # a seed torch.Generator takes (seed + n - 1 still does)


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
    use_beam_search: bool = False  # extension, as in vLLM: n beams, the n best returned (sampling fields unused)
    length_penalty: float = Field(default=1.0, ge=-10, le=10)  # extension: beam search ranks by logprob / len ** this


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
    # extension: how many leading token_ids are the prompt (the rest were generated after it), so that
    # an encoder-decoder's source or a GLM's Part A is read as such; without it, all are the prompt
    prompt_length: int | None = Field(default=None, ge=1)


MAX_ATTENTION_WEIGHTS = 4_000_000  # numbers per /tfamily/attention answer (steps x kinds x layers x heads x keys)


class AttentionBody(_Body):
    """Extension: the attention of the steps that generated ``completion_ids`` after ``prompt``."""
    model: str
    # as /v1/completions reads it: text, or token ids (the prompt_token_ids a completion returned)
    prompt: str | list[int]
    completion_ids: list[int] = Field(min_length=1)  # the generated tokens (return_token_ids), in order
    # which generated tokens (0 = the first) to return; default all. Decoding stops after the last one
    steps: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1, max_length=4096)


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
# errors, as the OpenAPI document describes them
# ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


BODY_MODELS = (CompletionBody, ChatBody, EmbeddingBody, DistributionBody, AttentionBody)
SamplingBody = _Sampling  # the fields completions and chat share
