"""`tfamily serve` and `tfamily fewshot` as a user runs them."""

import json
import socket
import subprocess
import sys
import time

import httpx

from tfamily.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_starts_answers_and_stops(checkpoint):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tfamily.cli", "serve", str(checkpoint), "--port", str(port),
                             "--threads", "1", "--model-name", "m"], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.json()["data"][0]["id"] == "m"
        c = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 3})
        assert c.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) is not None


def test_serve_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "not a tfamily checkpoint" in capsys.readouterr().err


def test_fewshot_command(checkpoint, tmp_path, capsys):
    examples = tmp_path / "ex.jsonl"
    examples.write_text(json.dumps({"input": "a", "output": "b"}) + "\n")
    assert main(["fewshot", str(checkpoint), "--instruction", "R.", "--example", "c => d",
                 "--examples", str(examples), "--query", "ef", "--max-tokens", "4", "--show-prompt"]) == 0
    err = capsys.readouterr().err
    assert "R.\n\nInput: c\nOutput: d\n\nInput: a\nOutput: b\n\nInput: ef\nOutput:" in err
    assert main(["fewshot", str(checkpoint), "--example", "no separator", "--query", "x"]) == 2
