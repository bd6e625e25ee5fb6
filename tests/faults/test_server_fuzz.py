"""Schema-based fuzzing of every server route against the server's own OpenAPI document.

Schemathesis reads /openapi.json from a live server (a tiny checkpoint on a free loopback
port, with an API key) and, for every operation, generates requests that fit the document
(positive: real bodies, most of them running a generation) and requests that break it
(negative: wrong types, missing fields, out-of-range values). Every response must be below
500 and arrive within the client timeout; every 4xx must be the JSON error shape with a
message; afterwards /health answers and no decode slot is left held.

Quick mode (``make test``) sends about 300 requests; ``TFAMILY_FAULTS=full`` at least 2,000.
"""

from __future__ import annotations

import collections
import json
import time

import pytest
import requests
import schemathesis
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from fault_helpers import FULL, record, trials
from server.conftest import LiveServer
from server.helpers import tiny_checkpoint

KEY = "sk-fuzz-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT = 30  # seconds per request; the largest body the document allows runs 16 x 63 tokens


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    torch.set_num_threads(1)
    ck = tiny_checkpoint(tmp_path_factory.mktemp("fuzz") / "tiny", context=256)
    with LiveServer(ck, max_batch=32, max_body_bytes=64 * 1024, api_key=KEY) as s:
        yield s


def _describe(case) -> str:
    """The request, unredacted (schemathesis' curl line hides fields named like "token")."""
    return json.dumps({"path": case.formatted_path, "query": case.query, "headers": case.headers,
                       "body": case.body}, default=repr, ensure_ascii=True)[:2000]


def _budget(path: str, method: str) -> int:
    """Examples per (operation, mode): the four POST routes take real bodies and get most."""
    if method == "POST":
        return trials(36, 260)
    if "{" in path:
        return trials(8, 40)
    return trials(2, 5)  # no parameters: hypothesis runs out of distinct requests at once


def test_every_route_survives_schema_fuzzing(keyed_server):
    url = keyed_server.url
    schema = schemathesis.openapi.from_url(url + "/openapi.json", timeout=10)
    operations = [r.ok() for r in schema.get_all_operations()]
    documented = {(op.method.upper(), op.path) for op in operations}
    # the document describes every route the server has, and each POST's body
    assert documented >= {("GET", "/health"), ("GET", "/v1/models"), ("GET", "/v1/models/{name}"),
                          ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                          ("POST", "/v1/embeddings"), ("POST", "/tfamily/distribution"), ("GET", "/"),
                          ("GET", "/static/{name}")}, documented
    for op in operations:
        if op.method.upper() == "POST":
            assert op.body, f"{op.path}: the document has no request body"

    statuses: collections.Counter = collections.Counter()
    per_route: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    rejected: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)  # 4xx by error.param
    failures: list[str] = []
    slowest = [0.0, ""]
    t0 = time.perf_counter()
    with requests.Session() as session:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{op.method.upper()} {op.path} ({mode.value})"

                @settings(max_examples=_budget(op.path, op.method.upper()), deadline=None, database=None,
                          derandomize=not FULL, phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode))
                def fuzz(case):
                    start = time.perf_counter()
                    try:
                        r = case.call(base_url=url, session=session, headers=AUTH, timeout=TIMEOUT)
                    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError,
                            UnicodeError):
                        statuses["not sent (client refused)"] += 1  # requests would not put it on the wire
                        return
                    except requests.exceptions.RequestException as e:  # timeout, reset: the server failed
                        failures.append(f"{label}: {type(e).__name__}: {e}\n  {_describe(case)}")
                        return
                    took = time.perf_counter() - start
                    if took > slowest[0]:
                        slowest[:] = [took, label]
                    statuses[r.status_code] += 1
                    per_route[label][r.status_code] += 1
                    if r.status_code >= 500:
                        failures.append(f"{label}: {r.status_code} {r.text[:300]}\n  {_describe(case)}")
                    elif r.status_code >= 400:
                        try:
                            error = r.json()["error"]
                            message = error["message"]
                            rejected[label][error.get("param") or error.get("code") or str(r.status_code)] += 1
                        except (ValueError, KeyError, TypeError):
                            message = None
                        if not isinstance(message, str) or not message:
                            failures.append(f"{label}: {r.status_code} is not the JSON error shape: {r.text[:200]}")

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to break: no parameters, or a path parameter any string fits
                    assert mode is GenerationMode.NEGATIVE and not op.body, label
    seconds = time.perf_counter() - t0
    sent = sum(v for k, v in statuses.items() if isinstance(k, int))

    health = requests.get(url + "/health", timeout=5)
    deadline = time.time() + 5
    while keyed_server.engine.active and time.time() < deadline:
        time.sleep(0.05)
    histogram = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    print(f"\nschema fuzzing: {sent} requests in {seconds:.1f} s ({histogram}); slowest {slowest[0]:.2f} s "
          f"({slowest[1]})")
    for label, counts in sorted(per_route.items()):
        print(f"  {label}: {dict(sorted(counts.items()))}; 4xx by field: {dict(rejected[label].most_common(6))}")
    ok = not failures and health.status_code == 200 and keyed_server.engine.active == 0
    record("server: schema fuzzing", sent,
           f"{'ok' if ok else 'FAILED'}: {sent} generated requests over {len(operations)} operations "
           f"(positive + negative) in {seconds:.0f} s; status codes {histogram}; slowest {slowest[0]:.2f} s; "
           f"{len(failures)} failures; /health {health.status_code} afterwards")
    assert not failures, "\n".join(failures[:10])
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert keyed_server.engine.active == 0, "fuzzed requests left decode slots held"
    assert sent >= trials(250, 2000), f"only {sent} requests were sent"
