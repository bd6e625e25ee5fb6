"""Clients that misbehave: vanish mid-stream, read slowly or not at all, and many that keep
coming for minutes. The server must free what a client held, keep serving the others at
their usual speed, and not grow in memory.

Quick mode (``make test``) runs each case small; ``TFAMILY_FAULTS=full`` runs more rounds,
and a 5-minute soak of 32 streaming clients against a `tfamily serve` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import torch

from fault_helpers import FULL, record, trials
from server.conftest import LiveServer
from server.helpers import tiny_checkpoint

CHAT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    """In this process (so the engine can be inspected), a 512-token context so that a stream
    runs long enough to be abandoned midway."""
    torch.set_num_threads(1)
    ck = tiny_checkpoint(tmp_path_factory.mktemp("clients") / "tiny", context=512)
    with LiveServer(ck, max_batch=32) as s:
        yield s


# ---------------------------------------------------------------------------------------
# raw HTTP over a socket: what a client that misbehaves does
# ---------------------------------------------------------------------------------------
def open_stream(port: int, path: str, body: dict, rcvbuf: int | None = None) -> socket.socket:
    """Send one streaming POST; the response is left unread."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # a small window: the server's writes back up at once when nobody reads
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    data = json.dumps({**body, "stream": True}).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def read_events(s: socket.socket, n: int, limit_s: float = 10) -> bytes:
    """Read until ``n`` server-sent events have arrived (or fail after ``limit_s``)."""
    got, deadline = b"", time.time() + limit_s
    while got.count(b"data:") < n:
        assert time.time() < deadline, f"only {got.count(b'data:')} events in {limit_s} s: {got[:200]!r}"
        chunk = s.recv(65536)
        assert chunk, f"the server closed the stream early: {got[:300]!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    return got


def abort(s: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the client vanishes without a goodbye."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def wait_until(condition, limit_s: float) -> float:
    """Seconds until ``condition()`` held; fails after ``limit_s``."""
    t0 = time.perf_counter()
    while not condition():
        assert time.perf_counter() - t0 < limit_s, f"not within {limit_s} s"
        time.sleep(0.01)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# 1. clients that vanish mid-stream
# ---------------------------------------------------------------------------------------
def test_clients_that_vanish_mid_stream_free_their_slots(long_server):
    engine, port = long_server.engine, long_server.port
    rounds, per_round = trials(2, 12), 8
    freed_in, early = [], []
    for r in range(rounds):
        before_cancelled, before_steps = engine.cancelled, engine.steps
        socks = []
        for i in range(per_round):  # half completions, half chat; long max_tokens, no early end
            path, body = (("/v1/completions", {"prompt": "The quick brown fox"}) if i % 2 else
                          ("/v1/chat/completions", {"messages": CHAT}))
            socks.append(open_stream(port, path, {"model": "tiny", "max_tokens": 480, "ignore_eos": True,
                                                  "seed": r * 100 + i, **body}))
        for s in socks:
            read_events(s, 3)
        assert engine.active == per_round  # every one of them holds a slot now
        for i, s in enumerate(socks):
            if i % 2:
                abort(s)  # reset
            else:
                s.shutdown(socket.SHUT_RDWR)  # an orderly close, without reading the rest
                s.close()
        freed_in.append(wait_until(lambda: engine.active == 0, 5))
        assert engine.cancelled - before_cancelled == per_round
        early.append(engine.steps - before_steps)
        assert early[-1] < 400, "the streams ran on to max_tokens instead of stopping"
        r2 = httpx.post(long_server.url + "/v1/completions", timeout=30,
                        json={"model": "tiny", "prompt": "hi", "max_tokens": 5, "ignore_eos": True})
        assert r2.status_code == 200 and r2.json()["usage"]["completion_tokens"] == 5
    n = rounds * per_round
    print(f"\n{n} vanished streams: slots freed within {max(freed_in):.2f} s (worst round), decode steps per "
          f"round {min(early)}-{max(early)} of 480")
    record("server: clients vanish mid-stream", n,
           f"ok: {rounds} rounds of {per_round} streams (max_tokens 480) closed after 3 events (half reset, "
           f"half FIN): every slot freed within {max(freed_in):.2f} s, {max(early)} decode steps at most per "
           "round, a new request completed after each round")


# ---------------------------------------------------------------------------------------
# 2. slow readers do not stall the others
# ---------------------------------------------------------------------------------------
def _normal_latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            t0 = time.perf_counter()
            body = {"model": "tiny", "max_tokens": 32, "ignore_eos": True, "seed": i, "prompt": "The quick"}
            r = c.post("/v1/completions", json=body)
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 32
    return out


def test_slow_readers_do_not_stall_the_others(long_server):
    url, port, engine = long_server.url, long_server.port, long_server.engine
    n_normal = trials(8, 40)
    _normal_latencies(url, 2)  # warm-up
    unloaded = _normal_latencies(url, n_normal)

    # 5 raw sockets with a 4 KiB window that stop reading after the first event, and 5 streams
    # read one event per second; all ask for 20 alternatives per token, so the bytes pile up.
    # Two of the stalled ones are chats with n=8: ~5 MB each, more than the kernel buffers
    # (~2.8 MB on loopback), so the server's own writes to them are paused, not just queued.
    stop = threading.Event()
    stalled = []
    for i in range(5):
        if i < 2:
            path, body = "/v1/chat/completions", {"messages": CHAT, "n": 8, "logprobs": True, "top_logprobs": 20}
        else:
            path, body = "/v1/completions", {"prompt": "slow", "logprobs": 20}
        s = open_stream(port, path, {"model": "tiny", "max_tokens": 400, "ignore_eos": True, "seed": i, **body},
                        rcvbuf=4096)
        read_events(s, 1)
        stalled.append(s)
    slow_read = [0] * 5

    def slow_reader(k: int) -> None:
        body = {"model": "tiny", "messages": CHAT, "max_tokens": 400, "ignore_eos": True, "stream": True,
                "logprobs": True, "top_logprobs": 20, "seed": 10 + k}
        with httpx.Client(base_url=url, timeout=30) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    slow_read[k] += 1
                    if stop.wait(1.0):  # one event a second, until told to leave
                        return

    readers = [threading.Thread(target=slow_reader, args=(k,), daemon=True) for k in range(5)]
    for t in readers:
        t.start()
    try:
        wait_until(lambda: all(slow_read), 10)
        decoding = engine.active
        assert decoding >= 10  # the slow ones are still being decoded while the measurement starts
        loaded = _normal_latencies(url, n_normal)
        health = httpx.get(url + "/health", timeout=5).json()
    finally:
        stop.set()
        for s in stalled:
            abort(s)
        for t in readers:
            t.join(timeout=10)
    wait_until(lambda: engine.active == 0, 10)

    u_med, l_med = statistics.median(unloaded), statistics.median(loaded)
    u_max, l_max = max(unloaded), max(loaded)
    figures = (f"normal completions (32 tokens): unloaded median {u_med * 1000:.0f} ms (max {u_max * 1000:.0f}), "
               f"with 10 slow readers median {l_med * 1000:.0f} ms (max {l_max * 1000:.0f}); "
               f"{decoding} rows decoding as it began, {health['running']} as it ended")
    print("\n" + figures)
    ok = l_med < 3 * u_med + 1 and l_max < 3 * u_max + 1
    record("server: slow readers", n_normal, f"{'ok' if ok else 'FAILED'}: 5 stalled sockets (4 KiB window, no "
           f"reads; 2 of them n=8 chats, ~5 MB each) + 5 streams read at 1 event/s, 400 tokens with 20 "
           f"alternatives each; {figures}")
    assert ok, figures


# ---------------------------------------------------------------------------------------
# 3. soak: 32 streaming clients against a `tfamily serve` subprocess; its RSS must not grow
# ---------------------------------------------------------------------------------------
KEY = "sk-soak-7"
# Under this load the server's RSS climbs for its first ~45-60 s and then stays flat (measured on
# 2 cores: 333 MB at 5 s, 394 MB at 46 s, 397 MB at 93 s). The climb is two bounded native caches
# filling, not our objects: oneDNN's primitive cache (1,024 kernels, one per new batch x window
# shape; ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 removes ~55 MB of it) and glibc's dynamic mmap
# threshold (which, once raised, keeps freed multi-MB tensors in the heap; MALLOC_MMAP_THRESHOLD_
# fixes it). The full soak runs the server as users do, with a 60 s warm-up; the quick one has 20 s,
# so it switches both caches off (then: 304 MB at 5 s, 311 MB at 20 s) to see a leak of ours.
QUICK_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`tfamily serve` in its own process (its RSS is its own), the key from TFAMILY_API_KEY."""
    folder = tmp_path_factory.mktemp("soak")
    ck = tiny_checkpoint(folder / "tiny", context=256)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "serve.log", "wb")
    env = {**os.environ, "TFAMILY_API_KEY": KEY, **({} if FULL else QUICK_ENV)}
    proc = subprocess.Popen([sys.executable, "-m", "tfamily.cli", "serve", str(ck), "--port", str(port),
                             "--threads", "1", "--model-name", "tiny"], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (folder / "serve.log").read_text()
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


async def _soak_client(k: int, url: str, deadline: float, stats: dict) -> None:
    """One client: streaming completions and chats, one after another, until ``deadline``."""
    rng = random.Random(k)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
        while time.time() < deadline:
            max_tokens = rng.randint(8, 64)
            common = {"model": "tiny", "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
                      "stream_options": {"include_usage": True}, "seed": rng.randrange(1 << 30)}
            if rng.random() < 0.5:
                path = "/v1/completions"
                body = {**common, "prompt": "The quick brown fox", "logprobs": rng.choice([None, 5])}
            else:
                path, body = "/v1/chat/completions", {**common, "messages": CHAT}
            try:
                tokens, done = 0, False
                async with c.stream("POST", path, json=body) as r:
                    if r.status_code != 200:
                        stats["errors"].append(f"{r.status_code}: {(await r.aread())[:200]!r}")
                        continue
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            event = json.loads(line[6:])
                            if event.get("usage"):
                                tokens = event["usage"]["completion_tokens"]
                            if event.get("error"):
                                stats["errors"].append(str(event["error"]))
                if not done or tokens != max_tokens:
                    stats["errors"].append(f"stream ended early: done={done}, {tokens} of {max_tokens} tokens")
                    continue
                stats["requests"] += 1
                stats["tokens"] += tokens
            except httpx.HTTPError as e:
                stats["errors"].append(f"{type(e).__name__}: {e}")


def test_soak_32_streaming_clients_rss_stays_flat(served):
    url, proc = served
    assert httpx.get(url + "/v1/models", timeout=5).status_code == 401  # TFAMILY_API_KEY was honoured
    seconds = trials(20, 300)
    warmup = trials(6, 60)
    every = trials(1.0, 5.0)
    process = psutil.Process(proc.pid)
    rss0 = process.memory_info().rss
    stats = {"requests": 0, "tokens": 0, "errors": []}
    samples: list[tuple[float, int]] = []  # (seconds since start, RSS bytes)

    async def run() -> None:
        t0 = time.time()
        deadline = t0 + seconds
        clients = [asyncio.create_task(_soak_client(k, url, deadline, stats)) for k in range(32)]
        while time.time() + every < deadline:  # samples under full load only, not at the clients' exit
            await asyncio.sleep(every)
            samples.append((time.time() - t0, process.memory_info().rss))
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)

    t0 = time.perf_counter()
    asyncio.run(run())
    took = time.perf_counter() - t0
    health = httpx.get(url + "/health", timeout=5).json()

    mb = 1 / 2 ** 20
    after_warmup = next(rss for t, rss in samples if t >= warmup)
    end = samples[-1][1]
    peak = max(rss for _, rss in samples)
    growth = end - after_warmup
    post = [(t, rss) for t, rss in samples if t >= warmup]
    tm, rm = statistics.mean(t for t, _ in post), statistics.mean(r for _, r in post)
    slope = (sum((t - tm) * (r - rm) for t, r in post) / max(1e-9, sum((t - tm) ** 2 for t, _ in post)))  # bytes/s
    # bound: the larger of 10 % and 30 MB (see QUICK_ENV for what was measured); a leak of 30 KB
    # per request (a few requests' token lists) passes it within the quick soak's ~1,000 requests
    bound = max(0.10 * after_warmup, 30 * 2 ** 20)
    figures = (f"RSS start {rss0 * mb:.0f} MB, after {warmup} s warm-up {after_warmup * mb:.0f} MB, end "
               f"{end * mb:.0f} MB (peak {peak * mb:.0f} MB; growth after warm-up {growth * mb:+.1f} MB, trend "
               f"{slope * 60 * mb:+.2f} MB/min); {stats['requests']} requests, {stats['tokens']} tokens in "
               f"{took:.0f} s = {stats['tokens'] / took:.0f} tokens/s; {len(stats['errors'])} errors")
    print("\n" + figures)
    ok = not stats["errors"] and growth < bound and health["running"] == 0
    record("server: soak, 32 streaming clients", stats["requests"],
           f"{'ok' if ok else 'FAILED'}: {seconds} s against a `tfamily serve` subprocess"
           f"{'' if FULL else ' (oneDNN primitive cache and dynamic mmap threshold off)'}, RSS sampled every "
           f"{every:g} s; {figures}; bound {bound * mb:.0f} MB")
    assert not stats["errors"], stats["errors"][:5]
    assert stats["requests"] >= 32 * 2
    assert health["running"] == 0
    assert growth < bound, figures
