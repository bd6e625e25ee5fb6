"""Timing machinery for side-by-side benchmarks: interleaved repetitions, machine ceilings
(matmul peak, memory bandwidth) and the printed table.

Two implementations of the same workload (A = tfamily, B = Hugging Face) run in one process,
alternately: warm-up A, B, ..., then A, B, A, B ... for the timed repetitions, so slow
periods of the machine (another process, frequency changes) hit both sides alike.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from tfamily.interop.registry import family_for
from tfamily.models import build_model
from tfamily.nn.linear import ONEDNN
from tfamily.nn.linear import linear as onednn_linear  # F.linear on oneDNN's kernel on a CPU


# ---- threads and timing ------------------------------------------------------------------

def set_threads(n: int | None = None) -> int:
    """Intra-op threads = the cores this process may use (not hyper-threads it may not)."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def time_once(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call (CPU work is synchronous; on CUDA, synchronise around it)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


@dataclass
class Timings:
    """Seconds per repetition of one side, warm-up excluded."""
    seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def interleave(a: Callable[[], object], b: Callable[[], object], warmup: int, reps: int) -> tuple[Timings, Timings]:
    """Run a, b, a, b ...: ``warmup`` untimed pairs, then ``reps`` timed pairs."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = Timings(), Timings()
    for _ in range(reps):
        ta.seconds.append(time_once(a))
        tb.seconds.append(time_once(b))
    return ta, tb


# ---- shared pieces of the workloads -----------------------------------------------------

def random_ids(vocab: int, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # a row's dtype name -> torch's


def autocast_or_not(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def free_memory() -> None:
    gc.collect()


def mirror_of(theirs: torch.nn.Module) -> torch.nn.Module:
    """tfamily's model holding the very tensors of the HF model ``theirs`` (random weights
    from a fixed seed), read through the interop registry as ``tfamily import-hf`` does."""
    family = family_for(theirs.config.model_type)
    cfg = family.config_from_hf(theirs.config.to_dict())
    ours = build_model(cfg)
    ours.load_state_dict(family.state_dict_from_hf(theirs.state_dict(), cfg))
    return ours


def training_step(loss_fn: Callable[[], torch.Tensor], optimizers: list, bf16: bool) -> Callable[[], float]:
    """One timed training step, the same on both sides: ``loss_fn()`` under autocast when
    ``bf16``, backward, every optimizer's step and ``zero_grad`` (no clipping); the loss."""
    def step() -> float:
        with autocast_or_not(bf16):
            loss = loss_fn()
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def hf_adamw(model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    """What a HF user writes: ``torch.optim.AdamW`` with its defaults (the for-loop version),
    or the fused one HF's own Trainer picks on torch >= 2.8."""
    return torch.optim.AdamW(model.parameters(), fused=True) if fused else torch.optim.AdamW(model.parameters())


def count_flops(fn: Callable[[], object]) -> float:
    """Matmul FLOPs (2 per multiply-add) of one call of ``fn``, counted by torch's
    FlopCounterMode over the ops it dispatches (mm, bmm, addmm, attention kernels): the
    model FLOPs of a workload whose shapes make the formula tedious (T5, BERT)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def labelled(side: str, fn):
    """fn(), with the side named in any error (e.g. a dtype one side does not support)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise RuntimeError(f"{side} failed: {type(e).__name__}: {e}") from e


# ---- machine ceilings --------------------------------------------------------------------

def best_of(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` timed calls, after one untimed warm-up call."""
    fn()
    return min(time_once(fn) for _ in range(reps))


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of one big square matmul (n x n) @ (n x n), 2 n^3 FLOPs: the practical peak
    of this machine and dtype, which MFU is measured against. The faster of torch's own
    ``matmul`` (fp32: MKL) and oneDNN's kernel (what ``tfamily.nn.Linear`` uses on a CPU)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    best = best_of(lambda: torch.matmul(a, b, out=out), reps)
    if ONEDNN:
        best = min(best, best_of(lambda: onednn_linear(a, b), reps))
    return 2 * n ** 3 / best


def memory_bandwidth(mbytes: int = 512, reps: int = 8) -> dict[str, float]:
    """Bytes/s of a streaming read (sum of a large fp32 tensor) and of a copy (read + write,
    both counted), on buffers far larger than the caches. The ceiling used for decode is the
    faster of the two: weight reads in decoding are read-mostly streams like these."""
    n = mbytes * 2 ** 20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    read = src.numel() * 4 / best_of(lambda: src.sum(), reps)
    copy = 2 * src.numel() * 4 / best_of(lambda: dst.copy_(src), reps)
    return {"read": read, "copy": copy, "ceiling": max(read, copy)}


@dataclass
class Machine:
    threads: int
    peak: dict[str, float]  # "fp32" / "bf16" -> FLOP/s of a big square matmul
    bandwidth: dict[str, float]  # "read" / "copy" / "ceiling" -> bytes/s

    def describe(self) -> str:
        return (f"threads {self.threads} | matmul peak fp32 {self.peak['fp32'] / 1e9:.0f} GFLOP/s, "
                f"bf16 {self.peak['bf16'] / 1e9:.0f} GFLOP/s | memory read {self.bandwidth['read'] / 1e9:.1f} GB/s, "
                f"copy {self.bandwidth['copy'] / 1e9:.1f} GB/s")


def measure_machine(threads: int, quick: bool = False) -> Machine:
    n = 1024 if quick else 2048
    peak = {"fp32": matmul_peak(torch.float32, n), "bf16": matmul_peak(torch.bfloat16, n)}
    return Machine(threads, peak, memory_bandwidth(128 if quick else 512))


def best_machine(first: Machine, second: Machine) -> Machine:
    """Ceilings are the best either measurement reached: run.py measures before and after the
    workloads, since on a shared (virtual) machine one measurement may land in a slow spell."""
    return Machine(first.threads, {k: max(first.peak[k], second.peak[k]) for k in first.peak},
                   {k: max(first.bandwidth[k], second.bandwidth[k]) for k in first.bandwidth})


# ---- results and the table ---------------------------------------------------------------

@dataclass
class Row:
    """One workload measured on both sides. ``work`` is the units done per repetition
    (tokens), so throughput = work / seconds; ``flops`` and ``bytes`` are per repetition
    (model FLOPs, weight bytes that must stream from memory) for MFU and bandwidth use."""
    name: str
    unit: str
    work: float
    ours: Timings
    theirs: Timings
    dtype: str  # which matmul peak MFU is measured against: "fp32" or "bf16"
    flops: float | None = None
    bytes: float | None = None
    note: str = ""
    theirs_dtype: str | None = None  # when HF runs another dtype than tfamily (default: the same)
    theirs_bytes: float | None = None  # HF's weight traffic when its dtype differs

    def side(self, ours: bool) -> tuple[str, float | None]:
        """(dtype, bytes) of one side."""
        if ours or self.theirs_dtype is None:
            return self.dtype, self.bytes
        return self.theirs_dtype, self.theirs_bytes


def mfu(row: Row, t: float, machine: Machine, ours: bool = True) -> float | None:
    return None if row.flops is None else row.flops / t / machine.peak[row.side(ours)[0]]


def bandwidth_fraction(row: Row, t: float, machine: Machine, ours: bool = True) -> float | None:
    traffic = row.side(ours)[1]
    return None if traffic is None else traffic / t / machine.bandwidth["ceiling"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


COLUMNS = ("workload", "unit", "tfamily", "HF", "ratio", "tfamily med", "HF med", "ratio med",
           "MFU tf", "MFU HF", "BW tf", "BW HF", "note")


def row_cells(row: Row, machine: Machine) -> list[str]:
    """Throughput from the fastest repetition (best) and the median one, for both sides."""
    o_best, h_best = row.work / row.ours.best, row.work / row.theirs.best
    o_med, h_med = row.work / row.ours.median, row.work / row.theirs.median
    return [row.name, row.unit, _rate(o_best), _rate(h_best), f"{o_best / h_best:.2f}x",
            _rate(o_med), _rate(h_med), f"{o_med / h_med:.2f}x",
            _pct(mfu(row, row.ours.best, machine)), _pct(mfu(row, row.theirs.best, machine, ours=False)),
            _pct(bandwidth_fraction(row, row.ours.best, machine)),
            _pct(bandwidth_fraction(row, row.theirs.best, machine, ours=False)), row.note]


def format_table(rows: list[Row], machine: Machine) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [list(COLUMNS)] + [row_cells(r, machine) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    line = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule] + [line(c) for c in cells[1:]])


def format_raw(rows: list[Row]) -> str:
    """Every repetition's seconds, for anyone who distrusts min and median."""
    out = []
    for r in rows:
        fmt = lambda ts: ", ".join(f"{s:.3f}" for s in ts.seconds)  # noqa: E731
        out.append(f"{r.name}: tfamily [{fmt(r.ours)}] s, HF [{fmt(r.theirs)}] s")
    return "\n".join(out)
