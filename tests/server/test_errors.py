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
]


@pytest.mark.parametrize("path, body, status, param", BAD, ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_is_named(http, path, body, status, param):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param.split(".")[0] in err["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
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
