"""Serving throughput: N concurrent streaming clients against the same N requests one by one.

Starts `tfamily serve` in a subprocess on a free loopback port (a checkpoint you give, or a
tiny random-weight GPT built here), then drives it with the official `openai` client from
this process: first sequentially, then all clients at once. Same prompts, same seeds, so
both runs produce the same tokens; prints tokens/s for each and the ratio.

    python -m benchmarks.serve_load                       # tiny model, 32 clients x 64 tokens
    python -m benchmarks.serve_load --checkpoint runs/demo/checkpoint --clients 32 --max-tokens 128
    python -m benchmarks.serve_load --preset t5-tiny      # another family (its tiny size, random weights)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tfamily.server.load import compare


def tiny_checkpoint(folder: Path, context: int, preset: str = "gpt-tiny") -> Path:
    """A random-weight checkpoint of ``preset`` with a char tokenizer fit to its family (a GLM's
    blank tokens; the start token an encoder-decoder's target begins from)."""
    import torch

    from tfamily.checkpoint import save_checkpoint
    from tfamily.models import build_model
    from tfamily.models.family import family_of
    from tfamily.presets import get_preset
    from tfamily.tokenizers import Tokenizer
    from tfamily.tokenizers.special import GLM_SPECIAL_TOKENS
    cfg = get_preset(preset).config()
    family = family_of(cfg)
    tok = Tokenizer.train("char", ["The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-\n"],
                          special_tokens=GLM_SPECIAL_TOKENS if family.prompt == "blanks" else None)
    fields = {k: v for k, v in family.data_fields(tok, context).items() if k != "max_seq_len"}
    torch.manual_seed(0)
    cfg = cfg.replace(vocab_size=tok.vocab_size, max_seq_len=context, pad_token_id=tok.pad_id, **fields)
    return save_checkpoint(folder / "tiny", build_model(cfg), cfg, tok.to_str())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a checkpoint folder (default: a tiny random --preset)")
    ap.add_argument("--preset", default="gpt-tiny", help="without --checkpoint: the preset to build (default gpt-tiny)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (default 1)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(Path(tmp), context=256, preset=args.preset)
        port = free_port()
        cmd = [sys.executable, "-m", "tfamily.cli", "serve", str(ck), "--port", str(port), "--model-name", "bench",
               "--threads", str(args.threads), "--max-batch", str(max(args.clients, 1))]
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    httpx.get(url + "/health", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            compare(url, "bench", clients=2, max_tokens=4)  # warm-up
            seq, con = compare(url, "bench", clients=args.clients, max_tokens=args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(f"checkpoint: {ck if args.checkpoint else f'{args.preset} (random weights), context 256'}; "
          f"server threads {args.threads}; {args.clients} clients x {args.max_tokens} max tokens")
    for name, r in (("sequential", seq), ("concurrent", con)):
        print(f"{name:11s} {r.tokens:6d} tokens in {r.seconds:6.2f} s = {r.tokens_per_s:8.1f} tok/s, "
              f"{len(r.errors)} errors")
    print(f"concurrent / sequential: {con.tokens_per_s / max(seq.tokens_per_s, 1e-9):.2f}x")
    if seq.errors or con.errors:
        print("errors:", *(seq.errors + con.errors)[:5], sep="\n  ")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
