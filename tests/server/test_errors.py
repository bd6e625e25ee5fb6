"""Bad requests get a 4xx JSON error naming the field; the server lives on."""

import socket

import pytest

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
COMP = {"model": "tiny", "prompt": "hi"}

BAD = [  # (path, body, status, param)
    ("/v1/completions", {**COMP, "model": "gpt-5"}, 404, "model"),
    ("/v1/chat/completions", {**CHAT, "model": "gpt-5"}, 404, "model"),
    ("/v1/embeddings", {"model": "gpt-5", "input": "x"}, 404, "model"),
    ("/v1/completions", {"prompt": "hi"}, 400, "model"),
    ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
    ("/v1/completions", {**COMP, "prompt": "x" * 200}, 400, "prompt"),  # context is 64
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x" * 200}]}, 400, "messages"),
    ("/v1/completions", {**COMP, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {**COMP, "max_tokens": -5}, 400, "max_tokens"),
    ("/v1/completions", {**COMP, "max_tokens": 100}, 400, "max_tokens"),  # prompt + 100 > 64
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10 ** 9}, 400, "max_tokens"),
    ("/v1/completions", {**COMP, "max_tokens": "ten"}, 400, "max_tokens"),
    ("/v1/completions", {**COMP, "temperature": -0.1}, 400, "temperature"),
    ("/v1/completions", {**COMP, "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {**COMP, "n": 0}, 400, "n"),
    ("/v1/completions", {**COMP, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {**COMP, "stop": [""]}, 400, "stop"),
    ("/v1/completions", {**COMP, "logprobs": 50}, 400, "logprobs"),
    ("/v1/completions", {**COMP, "prompt": [1, 2, 10 ** 6]}, 400, "prompt"),
    ("/v1/completions", {**COMP, "echo": True}, 400, "echo"),
    ("/v1/completions", {**COMP, "frequency_penalty": 1.0}, 400, "frequency_penalty"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 3}, 400, "top_logprobs"),
    ("/v1/embeddings", {"model": "tiny", "input": []}, 400, "input"),
    ("/v1/embeddings", {"model": "tiny", "input": "hi", "dimensions": 0}, 400, "dimensions"),
    ("/tfamily/distribution", {"model": "tiny", "token_ids": []}, 400, "token_ids"),
    # found by schema fuzzing (tests/faults/test_server_fuzz.py): these were 500s
    ("/v1/completions", {**COMP, "seed": 2 ** 64}, 400, "seed"),  # torch.Generator cannot take it
    ("/v1/chat/completions", {**CHAT, "seed": -(2 ** 70)}, 400, "seed"),
    # the deepest error of a union names the field best
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages.0.content.0.type"),
    ("/v1/completions", {"model": "tiny", "fewshot": {"query": "q", "examples": [{"input": "a"}]}}, 400,
     "fewshot.examples.0.output"),
    ("/v1/completions", {**COMP, "prompt": [[1], [2.5]]}, 400, "prompt.1.0"),
]


@pytest.mark.parametrize("path, body, status, param", BAD, ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_is_named(http, path, body, status, param):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param.split(".")[0] in err["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b"",
                                 b'{"model": "tiny", "prompt": "hi", "temperature": NaN}',  # Python reads it; not JSON
                                 b"[" * 30_000, b'{"a": ' * 10_000])  # nested past Python's recursion limit
def test_malformed_json_is_a_400(http, raw):
    r = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_oversized_bodies_are_refused_declared_or_chunked(http):
    big = {**COMP, "prompt": "x" * 100_000}  # the test server's limit is 64 KiB
    r = http.post("/v1/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit still holds while reading
        for _ in range(100):
            yield b"x" * 1024
    r = http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_routes_and_methods_answer_json(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = http.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_garbage_on_the_socket_does_not_kill_the_server(server, http):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"\x00\x01 NOT HTTP\r\n\r\n")
        s.recv(1024)
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a request cut short
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"model\"")
    assert http.get("/health").json()["status"] == "ok"
    r = http.post("/v1/completions", json={**COMP, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {**COMP, "temperature": 5e-324}),  # logits / t overflowed: NaN probabilities
    ("/v1/completions", {**COMP, "top_p": 5e-324}),  # 0 in fp32: every token was dropped
    ("/v1/chat/completions", {**CHAT, "temperature": 1e-40, "top_p": 1e-310}),
    ("/tfamily/distribution", {"model": "tiny", "token_ids": [5, 6], "temperature": 5e-324}),
    ("/tfamily/distribution", {"model": "tiny", "token_ids": [5, 6], "top_p": 5e-324}),
])
def test_tiny_temperature_and_top_p_mean_greedy_not_a_500(http, path, body):
    """Found by schema fuzzing: these were 500s (and in a batch would have failed every request
    sampled with them). A temperature under 1e-5 is greedy; a top_p under 1e-6 keeps the top token."""
    body = {**body, "max_tokens": 4} if "token_ids" not in body else body
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    if "token_ids" in body:
        assert r.json()["kept"] == 1
    else:
        greedy = http.post(path, json={**body, "temperature": 0, "top_p": 1}).json()
        field = "text" if "prompt" in body else "message"
        assert r.json()["choices"][0][field] == greedy["choices"][0][field]


def test_a_request_whose_sampling_fails_ends_alone(server, monkeypatch):
    """One request's sampler raising (as torch.multinomial does on NaN probabilities) fails that
    request only; the batch it shared goes on."""
    import threading

    import tfamily.server.engine as engine_module
    from tfamily.generation import SamplingParams
    from tfamily.server.engine import Request
    engine = server.engine
    done = {"bad": threading.Event(), "good": threading.Event()}
    seen = {"bad": [], "good": []}

    def emitter(name):
        def emit(chunk):
            seen[name].append(chunk)
            if chunk.finish_reason or chunk.error:
                done[name].set()
        return emit

    good = Request([5, 6, 7], SamplingParams(max_new_tokens=20, temperature=1.0, seed=1, stop_token_ids=()),
                   emitter("good"))
    bad_params = SamplingParams(max_new_tokens=20, temperature=0.7, seed=1, stop_token_ids=())
    bad = Request([5, 6], bad_params, emitter("bad"))
    real_pick = engine_module.pick

    def pick(logits, params, seen_ids, generator):
        if params is bad_params:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return real_pick(logits, params, seen_ids, generator)
    monkeypatch.setattr(engine_module, "pick", pick)
    engine.submit(good)
    engine.submit(bad)
    assert done["bad"].wait(10) and done["good"].wait(10)
    assert seen["bad"][-1].error and "sampling" in seen["bad"][-1].error
    assert seen["good"][-1].finish_reason == "length" and not any(c.error for c in seen["good"])
