"""Where a batch-1 decoding step of a real model spends its time, and what each change buys,
measured A/B in one process.

    python -m benchmarks.decode_profile qwen2.5-0.5b --formats gguf int4 int8 bf16 fp32
    python -m benchmarks.decode_profile smollm2 --compile

For each weight format (``benchmarks.gguf_models.FORMATS``) it prints:

- new tokens/s of greedy decoding (a 5-token prompt, ``--new-tokens`` generated), and the
  bandwidth ceiling of the format: memory bandwidth / the bytes one step must read;
- a profile of the steady-state steps (``torch.profiler``, self time per op): the share spent
  in the weight matmuls (the part the weights' bytes bound), in attention, and in everything
  else (norms, rotary, the cache, sampling, and the Python between them);
- A/B rows: 1 thread against all the cores, and (``--compile``) the model's forward under
  ``torch.compile`` against eager, both after a warm-up that pays the compilation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import torch

from .gguf_models import FORMATS, MODELS, PROMPT, load_pair, tfamily_model
from .gpt2 import ours_generate, weight_bytes
from .harness import memory_bandwidth, set_threads, time_once

# op name fragments -> the part of the step they belong to
MATMULS = ("int4pack_mm", "int8pack_mm", "_linear_pointwise", "aten::mm", "aten::addmm", "aten::linear")
ATTENTION = ("scaled_dot_product", "_flash_attention", "aten::bmm", "_efficient_attention")


def tokens_per_s(run, new_tokens: int, reps: int) -> float:
    """New tokens per second of the fastest of ``reps`` calls (the caller has warmed ``run`` up)."""
    return new_tokens / min(time_once(run) for _ in range(reps))


def profile_parts(run) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """Self CPU seconds per part ("matmuls", "attention", "rest") of one ``run()``, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    parts: dict[str, float] = defaultdict(float)
    ops = []
    for e in prof.key_averages():
        secs = e.self_cpu_time_total / 1e6
        ops.append((e.key, secs, e.count))
        if any(m in e.key for m in MATMULS):
            parts["matmuls"] += secs
        elif any(a in e.key for a in ATTENTION):
            parts["attention"] += secs
    parts["rest (small ops, Python)"] = wall - parts["matmuls"] - parts["attention"]
    parts["wall"] = wall
    return parts, sorted(ops, key=lambda o: -o[1])[:12]


def report(key: str, fmt: str, new_tokens: int, reps: int, compile_: bool, bandwidth: float) -> None:
    tok = load_pair(key)[2]
    model = tfamily_model(key, fmt)
    prompt = torch.tensor([tok.encode(PROMPT)])
    run = ours_generate(model, prompt, new_tokens)
    run()
    per_step = weight_bytes(model)
    rate = tokens_per_s(run, new_tokens, reps)
    ceiling = bandwidth / per_step
    print(f"\n## {MODELS[key][0]}, {fmt} weights: {rate:.1f} new tok/s; ceiling {ceiling:.0f} tok/s "
          f"({per_step / 1e6:.0f} MB a step at {bandwidth / 1e9:.1f} GB/s): {100 * rate / ceiling:.0f} % of it")
    parts, top = profile_parts(run)
    wall = parts.pop("wall")
    print("  where the time goes: " + ", ".join(f"{k} {100 * v / wall:.0f} %" for k, v in parts.items()))
    print("  top ops by self time: " + "; ".join(f"{n} {1e3 * s / new_tokens:.2f} ms/token ({c})" for n, s, c in top[:8]))
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        one = tokens_per_s(run, new_tokens, reps)
        torch.set_num_threads(threads)
        print(f"  A/B threads: 1 thread {one:.1f} tok/s, {threads} threads {tokens_per_s(run, new_tokens, reps):.1f}")
    if compile_:
        eager = tokens_per_s(run, new_tokens, reps)
        forward = model.forward
        model.forward = torch.compile(forward, dynamic=True)
        start = time.perf_counter()
        try:
            run()  # compiles (prefill and step shapes)
            run()
        except Exception as e:  # noqa: BLE001 - report, keep going
            print(f"  A/B torch.compile: failed ({type(e).__name__}: {str(e)[:200]})")
            model.forward = forward
            return
        paid = time.perf_counter() - start
        compiled = tokens_per_s(run, new_tokens, reps)
        model.forward = forward
        print(f"  A/B torch.compile (dynamic shapes): eager {eager:.1f} tok/s, compiled {compiled:.1f} "
              f"({compiled / eager:.2f}x; compiling took {paid:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also time the forward under torch.compile")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    bandwidth = memory_bandwidth()["ceiling"]
    print(f"torch {torch.__version__}, {threads} threads, memory {bandwidth / 1e9:.1f} GB/s")
    for fmt in args.formats:
        report(args.model, fmt, args.new_tokens, args.reps, args.compile, bandwidth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
