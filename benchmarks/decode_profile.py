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
  ``torch.compile`` against eager, both after a warm-up that pays the compilation;
- (``--gguf-import``) the GGUF file imported four ways, decoded in alternating rounds in one
  process: as now (the file's blocks in tfamily's kernel), every 4-bit layer on torch's int4
  kernel, as before the block kernel (4-bit layers on torch's int4, the rest int8), and as now
  with the MLP's gate and up projections left as two layers;
- (``--changes``) each change of the fourth to sixth sessions on issue 19 put back as it was before,
  one at a time and all together, timed alternately with the code as it is (``BEFORE``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Iterator
from unittest import mock

import torch

from tfamily.interop import gguf as interop_gguf
from tfamily.nn import attention, native

from .gguf_models import FORMATS, MODELS, PROMPT, load_pair, tfamily_model
from .gpt2 import ours_generate, weight_bytes
from .harness import memory_bandwidth, set_threads, time_once

# op name fragments -> the part of the step they belong to
MATMULS = ("int4pack_mm", "int8pack_mm", "_linear_pointwise", "aten::mm", "aten::addmm", "aten::linear",
           "tfamily::int8_matvec", "tfamily::gguf_matmul_parts")
ATTENTION = ("scaled_dot_product", "_flash_attention", "aten::bmm", "_efficient_attention", "tfamily::attend_step")


def tokens_per_s(run, new_tokens: int, reps: int) -> float:
    """New tokens per second of the fastest of ``reps`` calls (the caller has warmed ``run`` up)."""
    return new_tokens / min(time_once(run) for _ in range(reps))


def profile_parts(run) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """Self CPU seconds per part ("matmuls", "attention", "rest") of one ``run()``, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    def named(name: str):  # a ctypes call is no torch op: name it for the profile
        kernel = getattr(native, name)

        def call(*args):
            with torch.profiler.record_function(f"tfamily::{name}"):
                return kernel(*args)
        return mock.patch.object(native, name, call)

    with (profile(activities=[ProfilerActivity.CPU]) as prof, named("int8_matvec"), named("gguf_matmul_parts"),
          named("attend_step"), named("rms_norm"), named("silu_gate")):
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


# ---- the code before each change, put back for an A/B in one process -----------------------

def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _project_rotating_each(self, x, memory=None, rotary=None):
    """Attention.project as it was: split first, then cast the (B, T, D) tables in every layer
    and turn q and k one after the other (the Stack hands the raw tables on, see below)."""
    kv_dim = self.n_kv_head * self.head_dim
    q, k, v = self.qkv(x).split([self.n_head * self.head_dim, kv_dim, kv_dim], dim=-1)
    q, k, v = self._split(q, self.n_head), self._split(k, self.n_kv_head), self._split(v, self.n_kv_head)
    if rotary is not None:
        cos, sin = rotary
        turn = lambda t: t * cos[:, None].to(t.dtype) + _rotate_half(t) * sin[:, None].to(t.dtype)  # noqa: E731
        q, k = turn(q), turn(k)
    return q, k, v


@contextlib.contextmanager
def _rotary_per_layer() -> Iterator[None]:
    from tfamily.nn import block

    with mock.patch.object(block, "head_tables", lambda cos, sin, dtype: (cos, sin)), \
            mock.patch.object(attention.Attention, "project", _project_rotating_each):
        yield


BEFORE: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    # what changed -> a context that runs the code as it was before
    "attention formula chosen per CPU (AMX: SDPA)": lambda: mock.patch.object(attention, "AMX", False),
    "rotary tables once per forward, q and k in one pass": _rotary_per_layer,
    "int8 layers on nn.native's loop at batch 1": lambda: mock.patch.object(native, "int8_available", lambda: False),
    "RMSNorm in one native call (bf16 inference)": lambda: mock.patch.object(native, "rms_norm_available",
                                                                               lambda: False),
    "decoding step's attention in one native call": lambda: mock.patch.object(native, "attend_step_available",
                                                                                lambda: False),
    "silu(a) * g in one native call": lambda: mock.patch.object(native, "silu_gate_available", lambda: False),
}


def ab_changes(run: Callable[[], object], new_tokens: int, reps: int) -> None:
    """Each change of ``BEFORE`` undone on its own, then all of them, each timed alternately
    with the code as it is (``reps`` pairs, fastest of each side)."""
    def rate_with(contexts) -> float:
        with contextlib.ExitStack() as stack:
            for make in contexts:
                stack.enter_context(make())
            run()  # warm-up in this configuration
            return tokens_per_s(run, new_tokens, 1)

    rows = [(name, [make]) for name, make in BEFORE.items()] + [("all of the above", list(BEFORE.values()))]
    for name, contexts in rows:
        before, after = [], []
        for _ in range(reps):
            before.append(rate_with(contexts))
            after.append(rate_with([]))
        print(f"  A/B {name}: before {max(before):.1f} tok/s, after {max(after):.1f} "
              f"({max(after) / max(before):.2f}x)")


def ab_gguf_import(key: str, new_tokens: int, rounds: int = 5) -> None:
    """The file imported with weights="gguf" as now, with every 4-bit layer on torch's int4
    kernel, as before the block kernel, and without the fused gate; ``rounds`` alternating
    rounds, median tok/s."""
    from tfamily.interop import import_gguf

    path = MODELS[key][1]()
    builds = {
        "as now (the file's blocks; Q4_1 layers on torch's int4)": contextlib.nullcontext,
        "every 4-bit layer on torch's int4 kernel": lambda: mock.patch.object(
            interop_gguf, "TORCH_INT4_FIRST", tuple(interop_gguf.INT4_BLOCKS)),
        "before the block kernel (4-bit on torch's int4, the rest int8)": lambda: mock.patch.object(
            native, "gguf_available", lambda: False),
        "as now but gate and up apart (FUSE_GATE off)": lambda: mock.patch.object(interop_gguf, "FUSE_GATE", False),
    }
    tok = load_pair(key)[2]
    prompt = torch.tensor([tok.encode(PROMPT)])
    runs = {}
    for name, context in builds.items():
        with context():
            model = import_gguf(path, weights="gguf")[0]
        runs[name] = ours_generate(model, prompt, new_tokens)
        runs[name]()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(tokens_per_s(run, new_tokens, 1))
    for name, r in rates.items():
        print(f"  A/B import {name}: median {statistics.median(r):.1f} tok/s of {rounds} rounds "
              f"({', '.join(f'{x:.1f}' for x in r)})")


def report(key: str, fmt: str, new_tokens: int, reps: int, compile_: bool, bandwidth: float,
           changes: bool = False) -> None:
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
    if changes:
        ab_changes(run, new_tokens, reps)
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
    p.add_argument("--changes", action="store_true", help="A/B of each change in BEFORE against the code before it")
    p.add_argument("--gguf-import", action="store_true",
                   help="A/B of the GGUF file imported with the block kernel, all 4-bit on int4, and as before it")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    bandwidth = memory_bandwidth()["ceiling"]
    print(f"torch {torch.__version__}, {threads} threads, memory {bandwidth / 1e9:.1f} GB/s")
    if args.gguf_import:
        ab_gguf_import(args.model, args.new_tokens)
        return 0
    for fmt in args.formats:
        report(args.model, fmt, args.new_tokens, args.reps, args.compile, bandwidth, args.changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
