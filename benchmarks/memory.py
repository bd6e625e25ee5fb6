"""Memory: tokenising a corpus larger than RAM, and a training step's peak against sequence length.

    python -m benchmarks.memory tokenize --sizes 64,256,1024      # MB of text -> peak RSS of prepare_corpus
    python -m benchmarks.memory train --seq-lens 256,512,1024,2048,4096 [--checkpointing]

Every measurement runs in a fresh Python process and reads its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``), so one measurement never inherits another's memory.

``tokenize`` writes a corpus of the given size (the bundled Shakespeare, repeated, each copy
with its lines numbered so that no two copies are the same text), trains nothing (a char
tokenizer from the bundled corpus), and times ``prepare_corpus``: since it streams the file
in chunks into memory-mapped shards, its peak memory should not grow with the corpus.

``train`` runs one forward + backward + AdamW step of a small GPT (6 layers x 384, the
nanoGPT character model, fp32) on one sequence of each length, twice, and reports the peak
RSS and the peak above the process's memory just before the first step ("step MB": gradients
and AdamW state, the same at every length, plus the activations). With SDPA's fused kernel
attention never materialises the T x T score matrix, so the step grows linearly with T: the
memory per token ("per token KB") levels off instead of doubling with T, as a quadratic
attention would make it. ``--checkpointing`` recomputes each block's activations in backward.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mb() -> float:
    """Resident memory now (Linux: /proc/self/statm, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ---------------------------------------------------------------------- children
def child_tokenize(path: str, out: str) -> dict:
    from tfamily.data import bundled_corpus, prepare_corpus
    from tfamily.tokenizers import Tokenizer
    tokenizer = Tokenizer.train("char", [str(bundled_corpus("shakespeare"))])
    base = peak_rss_mb()
    t0 = time.perf_counter()
    info = prepare_corpus(path, tokenizer, out)
    return {"tokens": info.train_tokens + info.val_tokens, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base}


def child_train(seq_len: int, checkpointing: bool) -> dict:
    import torch

    from tfamily.models import build_model
    from tfamily.nn import Stack
    from tfamily.presets import get_preset
    torch.set_num_threads(2)
    cfg = get_preset("gpt-small-char").config(vocab_size=128, max_seq_len=seq_len, dropout=0.0)
    model = build_model(cfg)
    for stack in (m for m in model.modules() if isinstance(m, Stack)):
        stack.checkpointing = checkpointing
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    ids = torch.randint(0, 128, (1, seq_len + 1))
    before = rss_mb()  # the model and the interpreter; the steps add gradients, AdamW state, activations
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"seq_len": seq_len, "checkpointing": checkpointing, "peak_rss_mb": peak_rss_mb(), "before_mb": before,
            "step_mb": peak_rss_mb() - before}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- parents
def write_corpus(path: Path, megabytes: int) -> int:
    from tfamily.data import bundled_corpus
    text = bundled_corpus("shakespeare").read_text(encoding="utf-8").splitlines()
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 2**20:
            block = "".join(f"{copy} {line}\n" for line in text)
            f.write(block)
            written += len(block.encode("utf-8"))
            copy += 1
    return written


def bench_tokenize(sizes: list[int]) -> None:
    print(f"{'corpus MB':>10} {'tokens':>14} {'seconds':>8} {'peak RSS MB':>12} {'before MB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in sizes:
            corpus = Path(tmp) / f"corpus-{mb}.txt"
            size = write_corpus(corpus, mb)
            r = run_child("tokenize", str(corpus), str(Path(tmp) / f"shards-{mb}"))
            print(f"{size / 2**20:>10.0f} {r['tokens']:>14,} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['rss_before_mb']:>10.0f}", flush=True)
            corpus.unlink()


def bench_train(seq_lens: list[int], checkpointing: bool | None) -> None:
    modes = [False, True] if checkpointing is None else [checkpointing]
    print(f"{'seq_len':>8} {'checkpointing':>14} {'peak RSS MB':>12} {'step MB':>8} {'per token KB':>13}")
    for t in seq_lens:
        for mode in modes:
            r = run_child("train", str(t), str(int(mode)))
            print(f"{t:>8} {str(mode):>14} {r['peak_rss_mb']:>12.0f} {r['step_mb']:>8.0f} "
                  f"{r['step_mb'] * 1024 / t:>13.0f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, *rest = argv[1:]
        result = child_tokenize(*rest) if kind == "tokenize" else child_train(int(rest[0]), bool(int(rest[1])))
        print(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tokenize")
    t.add_argument("--sizes", default="64,256,1024", help="corpus sizes in MB (default 64,256,1024)")
    r = sub.add_parser("train")
    r.add_argument("--seq-lens", default="256,512,1024,2048,4096")
    r.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="only with (or without) activation checkpointing; default both")
    args = p.parse_args(argv)
    if args.what == "tokenize":
        bench_tokenize([int(x) for x in args.sizes.split(",")])
    else:
        bench_train([int(x) for x in args.seq_lens.split(",")], args.checkpointing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
