"""`tfamily serve`: the OpenAI-compatible API and the token-probability playground."""

from __future__ import annotations

import argparse
import os
import sys

from .common import MODEL_SOURCE_HELP, UsageError, add_weights_arg, announce


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=MODEL_SOURCE_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only). 0.0.0.0 exposes the "
                        "server to the network: anyone who can reach the port can use it, so set --api-key too")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on the API (/v1, /tfamily); /health and the page "
                        "stay open, open the page as /?key=KEY (default: the TFAMILY_API_KEY environment "
                        "variable, which keeps the key out of `ps`; unset: no key)")
    p.add_argument("--model-name", default=None,
                   help="the model id clients name (default: the checkpoint's folder name, or the GGUF file's name "
                        "without .gguf)")
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most (default 32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_weights_arg(p)


def cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import CheckpointError
    from ..server import serve
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.max_batch <= 1024:
        raise UsageError(f"--max-batch must be in [1, 1024], got {args.max_batch}")
    api_key = args.api_key if args.api_key is not None else (os.environ.get("TFAMILY_API_KEY") or None)
    if api_key is not None:
        from ..server.middleware import check_api_key
        try:
            check_api_key(api_key)
        except ValueError as e:
            raise UsageError(f"--api-key (or TFAMILY_API_KEY): {e}; leave it unset for no key") from None

    def banner() -> None:
        print(f"serving {args.checkpoint} on http://{args.host}:{args.port}/ (playground at /, API at /v1"
              f"{', API key required' if api_key else ''})", file=sys.stderr)
        if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: {args.host} is reachable from the network and no --api-key is set: "
                  "anyone who can reach this port can use the server", file=sys.stderr)
    try:
        serve(args.checkpoint, args.host, args.port, model_name=args.model_name, max_batch=args.max_batch,
              device=args.device, weights=args.weights, api_key=api_key, on_ready=banner, on_note=announce)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None
    return 0
