"""The API key: `--api-key` / TFAMILY_API_KEY, checked as the official openai client sends it;
the loopback default of `--host`."""

import httpx
import openai
import pytest
import torch

from server.conftest import LiveServer
from tfamily.cli import build_parser, main

KEY = "sk-test-key-123"


@pytest.fixture(scope="module")
def keyed(checkpoint):
    torch.set_num_threads(1)
    with LiveServer(checkpoint, max_batch=8, api_key=KEY) as s:
        yield s


def _client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_the_right_key_works_with_the_openai_client(keyed):
    client = _client(keyed, KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    c = client.completions.create(model="tiny", prompt="hi", max_tokens=3)
    assert c.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=3, stream=True)
    assert any(chunk.choices and chunk.choices[0].finish_reason for chunk in stream)
    assert len(client.embeddings.create(model="tiny", input="hi").data[0].embedding) > 0


@pytest.mark.parametrize("key", ["wrong", KEY + "x", KEY[:-1], None])
def test_a_wrong_or_missing_key_is_an_authentication_error(keyed, key):
    client = _client(keyed, key or "unused")
    no_header = {"extra_headers": {"Authorization": openai.omit}} if key is None else {}  # no key sent at all
    with pytest.raises(openai.AuthenticationError) as e:
        client.completions.create(model="tiny", prompt="hi", max_tokens=3, **no_header)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    assert ("didn't provide" if key is None else "Incorrect") in e.value.message
    with pytest.raises(openai.AuthenticationError):
        client.models.list(**no_header)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="tiny", input="hi", **no_header)


def test_401_is_the_error_shape_and_covers_every_api_route(keyed):
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("POST", "/v1/completions"),
                             ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"),
                             ("POST", "/tfamily/distribution"), ("POST", "/tfamily/attention"), ("GET", "/v1/nothing"),
                             ("GET", "/v1")]:
            r = http.request(method, path, json={"model": "tiny"})
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
            assert "API key" in err["message"]
        # the scheme is case-insensitive; a key sent without "Bearer" is refused with a hint
        assert http.get("/v1/models", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        r = http.get("/v1/models", headers={"Authorization": KEY})
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
        # open without the key: health, the page, its files, the docs
        for path in ["/health", "/", "/static/playground.js", "/openapi.json", "/docs"]:
            assert http.get(path).status_code == 200, path
        doc = http.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert doc["paths"]["/v1/completions"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in doc["paths"]["/health"]["get"]


def test_the_key_is_compared_in_constant_time(keyed, monkeypatch):
    import tfamily.server.middleware as api
    calls = []
    real = api.hmac.compare_digest
    monkeypatch.setattr(api.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        assert http.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert calls == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_keys_a_header_cannot_carry_are_refused_at_start(checkpoint):
    from tfamily.server.middleware import check_api_key
    for bad in ["", "has space", "naïve", "tab\there"]:
        with pytest.raises(ValueError, match="api_key"):
            check_api_key(bad)
    assert main(["serve", str(checkpoint), "--api-key", "two words"]) == 2


def test_host_defaults_to_loopback_and_warns_about_0000():
    parser = build_parser()
    args = parser.parse_args(["serve", "ckpt"])
    assert args.host == "127.0.0.1" and args.api_key is None
    serve = parser._subparsers._group_actions[0].choices["serve"]
    host_help = next(a.help for a in serve._actions if a.dest == "host")
    assert "127.0.0.1" in host_help and "0.0.0.0" in host_help and "network" in host_help
    assert parser.parse_args(["serve", "ckpt", "--api-key", "k"]).api_key == "k"


def test_cmd_serve_takes_the_key_from_the_flag_or_the_environment(checkpoint, monkeypatch, capsys):
    import tfamily.server
    got = {}

    def fake_serve(ckpt, host, port, on_ready=None, **kw):  # the banner prints once the model is loaded
        got.update(host=host, **kw)
        on_ready()
    monkeypatch.setattr(tfamily.server, "serve", fake_serve)
    monkeypatch.setenv("TFAMILY_API_KEY", "from-env")
    assert main(["serve", str(checkpoint)]) == 0
    assert got["api_key"] == "from-env" and got["host"] == "127.0.0.1"
    assert main(["serve", str(checkpoint), "--api-key", "from-flag"]) == 0
    assert got["api_key"] == "from-flag"
    monkeypatch.setenv("TFAMILY_API_KEY", "")  # empty: no key
    assert main(["serve", str(checkpoint)]) == 0
    assert got["api_key"] is None
    monkeypatch.delenv("TFAMILY_API_KEY")
    assert main(["serve", str(checkpoint), "--host", "0.0.0.0"]) == 0
    assert got["api_key"] is None and "reachable from the network" in capsys.readouterr().err


def test_without_a_key_the_api_is_open_and_documents_no_401(http):
    assert http.get("/v1/models").status_code == 200
    doc = http.get("/openapi.json").json()
    assert "securitySchemes" not in doc["components"]
    assert "401" not in doc["paths"]["/v1/completions"]["post"]["responses"]
