"""Middleware and error handling: API-key auth, the body-size limit, and OpenAI-shaped errors.

Bad input gets a 4xx with ``{"error": {"message", "type", "param", "code"}}`` naming the field;
nothing else (no traceback) ever reaches the client.

With an API key (``create_app(..., api_key=...)``, ``tfamily serve --api-key``), every /v1 and
/tfamily route (and any unknown path) needs ``Authorization: Bearer KEY``, else 401; /health,
the page with its /static files and the docs stay open.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

log = logging.getLogger("tfamily.server")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more than any prompt that fits a context


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def install_error_handlers(app: FastAPI) -> None:
    """ApiError as OpenAI's error JSON; 404 / 405 in the same shape; anything unexpected as a
    500 whose cause is logged here, never sent."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_, e: ApiError):
        return error_response(e.status, e.message, e.param, e.code, e.kind)

    @app.exception_handler(Exception)
    async def _unexpected(_, e: Exception):  # logged here; the client gets no trace
        log.exception("unexpected error")
        return error_response(500, "internal server error", kind="server_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, e: StarletteHTTPException):  # 404 / 405 in the same JSON shape
        return error_response(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)


# ---------------------------------------------------------------------------------------
# API key
# ---------------------------------------------------------------------------------------
OPEN_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


def needs_key(path: str) -> bool:
    """Everything needs the key (the API under /v1 and /tfamily, and any path not known here)
    except /health, the page, its /static files and the docs."""
    return not (path in OPEN_PATHS or path.startswith("/static/"))


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
        if scope["type"] != "http" or not needs_key(scope.get("path", "")):
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
