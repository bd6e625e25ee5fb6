"""A load generator for the server: N concurrent streaming clients against N sequential ones.

Used by ``benchmarks/serve_load.py`` and the concurrency test. Each client streams one
completion with the official ``openai`` client and counts the tokens it received (from
the final usage chunk); throughput is all tokens over the wall time of the whole batch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    clients: int
    tokens: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def _one(client, model: str, prompt: str, max_tokens: int, seed: int) -> int:
    stream = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, seed=seed,
                                             temperature=1.0, stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})  # every client gets max_tokens
    tokens, finished = 0, False
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].finish_reason:
            finished = True
    if not finished:
        raise RuntimeError("stream ended without a finish_reason")
    return tokens


async def run_load(base_url: str, model: str, clients: int, max_tokens: int, concurrent: bool,
                   prompt: str = "The quick brown fox") -> LoadResult:
    """``clients`` streaming completions, all at once (concurrent) or one after another."""
    import openai
    async with openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="unused", max_retries=0,
                                  timeout=120) as client:
        t0 = time.perf_counter()
        calls = [_one(client, model, prompt, max_tokens, seed) for seed in range(clients)]
        if concurrent:
            results = await asyncio.gather(*calls, return_exceptions=True)
        else:
            results = []
            for call in calls:
                try:
                    results.append(await call)
                except Exception as e:  # counted, not raised: the report lists every error
                    results.append(e)
        seconds = time.perf_counter() - t0
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    tokens = sum(r for r in results if isinstance(r, int))
    return LoadResult(clients, tokens, seconds, errors)


def compare(base_url: str, model: str, clients: int = 32, max_tokens: int = 64) -> tuple[LoadResult, LoadResult]:
    """(sequential, concurrent) results for the same requests (same seeds, same tokens)."""
    sequential = asyncio.run(run_load(base_url, model, clients, max_tokens, concurrent=False))
    concurrent = asyncio.run(run_load(base_url, model, clients, max_tokens, concurrent=True))
    return sequential, concurrent
