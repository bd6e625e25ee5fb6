"""Serving: an OpenAI-compatible HTTP API with continuous batching, and the playground page.

    tfamily serve CKPT --port 8000      # then open http://127.0.0.1:8000/

``build_app(ckpt)`` gives the FastAPI app (and its engine) for embedding in other servers
or tests; ``serve(ckpt, host, port)`` runs it under uvicorn. Every family that generates is
served (decoders with continuous batching; encoder-decoders and GLMs over their decoding
State, see ``engine.py``); an encoder serves embeddings.

    routes.py         the FastAPI app and its handlers (``create_app``)
    schemas.py        request bodies (pydantic)
    openai_format.py  chunks of Steps as OpenAI JSON: logprobs, usage, server-sent events
    middleware.py     API-key auth, body-size limit, error handlers
    service.py        request bodies turned into engine requests, per family
    engine.py         the thread that owns the model and decodes every request
"""

from __future__ import annotations

from pathlib import Path

from .engine import Chunk, Engine, Request

__all__ = ["Chunk", "Engine", "Request", "build_app", "create_app", "serve"]


def create_app(*args, **kwargs):
    """The FastAPI app over an Engine (``routes.create_app``)."""
    from .routes import create_app as create
    return create(*args, **kwargs)


def build_app(checkpoint: str | Path, model_name: str | None = None, max_batch: int = 32,
              device: str = "cpu", max_body_bytes: int | None = None, weights: str | None = None,
              api_key: str | None = None, on_note=None):
    """(FastAPI app, Engine) for a checkpoint folder, a GGUF file or a packaged model's name
    (``interop.open_for_generation``), its weights served as ``weights`` (fp32, bf16, int8, int4,
    gguf; None: the source's default, fp32 for a checkpoint, gguf for a GGUF file on a CPU).
    ``on_note(text)`` hears a default the caller did not pick. ``api_key``: when set, the API
    answers 401 without ``Authorization: Bearer <api_key>`` (/health and the page stay open).
    Close the engine when done."""
    from ..interop import open_for_generation
    from .middleware import MAX_BODY_BYTES
    from .routes import create_app

    source = open_for_generation(checkpoint, weights, device=device)
    if source.note and on_note is not None:
        on_note(source.note)
    engine = Engine(source.model, source.tokenizer, max_batch=max_batch)
    app = create_app(engine, source.tokenizer, model_name or source.name, source.chat_template,
                     max_body_bytes=max_body_bytes or MAX_BODY_BYTES, api_key=api_key)
    return app, engine


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, on_ready=None, **kwargs) -> None:
    """Load ``checkpoint`` and serve it until interrupted; ``on_ready()`` runs once the model
    has loaded (the CLI prints its banner there, so a bad checkpoint gets one error line only)."""
    import uvicorn
    app, engine = build_app(checkpoint, **kwargs)
    if on_ready is not None:
        on_ready()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        engine.close()
