"""One live server for the server tests: a tiny checkpoint under uvicorn on a free loopback
port, in a background thread, shut down cleanly at the end."""

import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from server.helpers import tiny_checkpoint
from tfamily.server import build_app


class LiveServer:
    def __init__(self, checkpoint, **kwargs):
        self.app, self.engine = build_app(checkpoint, model_name="tiny", **kwargs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="session")
def server(checkpoint):
    torch.set_num_threads(1)
    with LiveServer(checkpoint, max_batch=32, max_body_bytes=64 * 1024) as s:
        yield s


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
