"""tfamily vs Hugging Face transformers: GPT-2 small training and decoding, BERT-base inference,
T5-small training, SmolLM2 decoding.

    python -m benchmarks.run                    # everything (~11 minutes on a 2-core CPU)
    python -m benchmarks.run --quick            # tiny model and sizes: a smoke test in seconds
    python -m benchmarks.run --only decode --reps 2
    python -m benchmarks.run --only train-bf16,decode-b1-fp32

See benchmarks/README.md for the method and the meaning of every column.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
import warnings

import torch
import transformers

from . import bert, gguf_models, gpt2, quality, t5
from .harness import best_machine, format_raw, format_table, measure_machine, set_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None,
                   help="comma-separated workload names or prefixes (train, decode, train-bf16, decode-b1-fp32 ...)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per side (default: 3 for training, 2 for decoding)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions per side first (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the harness, not the speed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    p.add_argument("--hf-fused-adamw", action="store_true",
                   help="give HF fused AdamW (what transformers' Trainer picks on torch >= 2.8) "
                        "instead of torch.optim.AdamW's defaults")
    p.add_argument("--raw", action="store_true", help="also print every repetition's seconds")
    return p.parse_args(argv)


def selected(names: list[str], only: str | None) -> list[str]:
    if not only:
        return names
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [n for n in names if any(n == w or n.startswith(w) for w in wanted)]
    if not chosen:
        sys.exit(f"--only {only!r} matches no workload; known: {', '.join(names)}")
    return chosen


def header(machine) -> str:
    return (f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"python {platform.python_version()}, {platform.machine()}\n{machine.describe()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # HF's generation-config notices would interleave with the table
    transformers.logging.set_verbosity_error()
    threads = set_threads(args.threads)
    sizes = gpt2.QUICK if args.quick else gpt2.FULL
    reps_train = args.reps or (2 if args.quick else 3)
    reps_decode = args.reps or 2
    table = gpt2.workloads(sizes, args.warmup, args.warmup, reps_train, reps_decode, args.hf_fused_adamw,
                           quality.smollm2_quality)
    table.update(bert.workloads(bert.QUICK if args.quick else bert.FULL, args.warmup, reps_train))
    table.update(t5.workloads(t5.QUICK if args.quick else t5.FULL, args.warmup, reps_train, args.hf_fused_adamw))
    table.update(gguf_models.workloads(16 if args.quick else 64, args.warmup, reps_decode, quality.gguf_quality))
    names = selected(list(table), args.only)

    before = measure_machine(threads, quick=args.quick)
    print(f"before: {before.describe()}", flush=True)
    rows, failures = [], []
    for name in names:
        start = time.perf_counter()
        try:
            rows.append(table[name]())
            print(f"  {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - one broken workload must not hide the others
            failures.append(f"{name}: {e}")
            print(f"  {name}: FAILED ({e})", flush=True)
            traceback.print_exc(limit=3)
    after = measure_machine(threads, quick=args.quick)
    print(f"after:  {after.describe()}")
    machine = best_machine(before, after)
    print()
    print(header(machine))
    print(f"{sizes.label}; {args.warmup} warm-up + {reps_train} (training) / {reps_decode} (decoding) "
          "timed repetitions per side, interleaved")
    print(format_table(rows, machine))
    if args.raw:
        print()
        print(format_raw(rows))
    for f in failures:
        print(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
