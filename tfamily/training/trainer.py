"""One training loop for every family, readable top to bottom.

    for step in steps:                       # until `steps` or `max_time`, whichever first
        lr = schedule(step, progress)
        for micro-batch in split(data.batch(step), grad_accum):
            loss = objective.loss(model(**batch.inputs), batch) / grad_accum
            loss.backward()                  # under bf16 autocast when asked
        clip grad norm; AdamW step; zero grads
        every eval_interval: validation loss, checkpoint (atomic)
    final eval, checkpoint, loss-curve PNG

Exact resume: the data sampler is a pure function of (seed, step), the checkpoint holds
weights, optimizer moments, the RNG state and the step, so a run stopped at step N and
resumed produces the same losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..checkpoint import load_trainer_state, load_weights, save_checkpoint
from ..config import ModelConfig
from ..nn.lora import has_lora, merge_lora
from ..objectives import Objective
from .config import TrainConfig
from .optim import make_optimizers, optimizers_from_tensors, optimizers_to_tensors
from .schedule import SCHEDULES

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class BatchSource(Protocol):
    def batch(self, step: int) -> Any: ...


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs that support it and on CPUs with bf16 matrix
    instructions (AVX-512 BF16 or AMX); elsewhere it only adds casts."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Trainer:
    def __init__(self, model: nn.Module, model_cfg: ModelConfig, objective: Objective, train_data: BatchSource,
                 val_data: BatchSource | None, cfg: TrainConfig, tokenizer_json: str | None = None,
                 extra_state: dict[str, Any] | None = None, chat_template: str | None = None):
        self.cfg, self.model_cfg, self.objective = cfg, model_cfg, objective
        self.train_data, self.val_data = train_data, val_data
        self.tokenizer_json = tokenizer_json
        self.extra_state = extra_state or {}  # e.g. how the data was prepared, saved with checkpoints
        self.chat_template = chat_template  # carried along when fine-tuning a chat model
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = pick_device(cfg.device)
        self.model = model.to(self.device)
        self.optimizers = make_optimizers(self.model, cfg, self.device)
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else bf16_is_fast(self.device)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.elapsed = 0.0  # training seconds so far, carried across resumes
        self.losses: list[float] = []  # train loss per step of this process (tests read it)
        self.val_losses: list[tuple[int, float]] = []
        self.best_val = math.inf

    # ---- state ------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        opt_tensors, groups = optimizers_to_tensors(self.optimizers)
        opt_tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"step": self.step, "elapsed": self.elapsed, "train_config": self.cfg.to_dict(),
                 "optimizer_groups": groups, "best_val": None if math.isinf(self.best_val) else self.best_val,
                 "val_losses": self.val_losses, **self.extra_state}
        return save_checkpoint(path or self.out_dir / CHECKPOINT_DIR, self._plain_model(), self.model_cfg,
                               self.tokenizer_json, state, opt_tensors, chat_template=self.chat_template)

    def _plain_model(self) -> nn.Module:
        """The model to write: with LoRA adapters, a merged copy, so every checkpoint loads as a
        plain model of its config (the adapters themselves are not kept, so LoRA runs cannot resume)."""
        if not has_lora(self.model):
            return self.model
        return merge_lora(copy.deepcopy(self.model))

    def resume(self, path: str | Path) -> None:
        """Load weights, optimizer moments, RNG and step from a training checkpoint."""
        path = Path(path)
        state, tensors = load_trainer_state(path)
        load_weights(self.model, path, self.device)
        optimizers_from_tensors(self.optimizers, {k: v.to(self.device) for k, v in tensors.items()},
                               state["optimizer_groups"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.val_losses = [tuple(v) for v in state.get("val_losses", [])]
        self.best_val = state["best_val"] if state.get("best_val") is not None else math.inf

    # ---- the loop ---------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the budget used: steps after warm-up, or wall-clock time if that ends first."""
        cfg = self.cfg
        by_steps = (self.step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        by_time = self.elapsed / cfg.max_time if cfg.max_time else 0.0
        return max(by_steps, by_time)

    def lr_now(self) -> float:
        c = self.cfg
        return SCHEDULES[c.schedule](self.step, self.progress(), c.lr, c.final_lr, c.warmup)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over the global batch for ``self.step``; returns its mean loss
        and the tokens it processed."""
        cfg = self.cfg
        lr = self.lr_now()
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        total, tokens = 0.0, 0
        for micro in split_micro(self.train_data.batch(self.step), cfg.grad_accum):
            batch = self.objective.prepare(micro).to(self.device)
            with self.autocast():
                output = self.forward(**batch.inputs)
            loss = self.objective.loss(output, batch) / cfg.grad_accum
            loss.backward()
            total += loss.item()
            tokens += batch.n_tokens
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.step += 1
        return total, tokens

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over ``eval_batches`` fixed validation batches (the same ones every time)."""
        if self.val_data is None:
            return None
        self.model.eval()
        losses = []
        n = self.cfg.eval_batches
        if hasattr(self.val_data, "__len__"):  # a finite validation set: each batch once
            n = min(n, len(self.val_data))
        for i in range(n):
            batch = self.objective.prepare(self.val_data.batch(i)).to(self.device)
            with self.autocast():
                output = self.forward(**batch.inputs)
            losses.append(self.objective.loss(output, batch).item())
        self.model.train()
        return sum(losses) / len(losses)

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _out_of_time(self) -> bool:
        return self.cfg.max_time is not None and self.elapsed >= self.cfg.max_time

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train until ``steps`` or ``max_time``; evaluate and checkpoint along the way.

        ``until`` stops early at that step without changing the schedule (as if the run
        were interrupted there), which is how resume is tested.
        """
        cfg = self.cfg
        last = min(cfg.steps, until) if until is not None else cfg.steps
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        bar = ProgressBar(cfg, self.step, self.elapsed)
        tokens_since, t_log = 0, time.perf_counter()
        last_eval_step = -1
        val = None
        interrupted = False
        try:
            while self.step < last and not self._out_of_time():
                t0 = time.perf_counter()
                loss, tokens = self.train_step()
                self.elapsed += time.perf_counter() - t0
                self.losses.append(loss)
                tokens_since += tokens
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {self.step}; try a lower lr or grad_clip")
                if self.step % cfg.log_interval == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    tps = tokens_since / max(now - t_log, 1e-9)
                    tokens_since, t_log = 0, now
                    self._log({"step": self.step, "loss": loss, "lr": self.lr_now(), "tokens_per_s": round(tps, 1),
                               "elapsed": round(self.elapsed, 2)})
                    bar.note(step=str(self.step), loss=f"{loss:.3f}", val=f"{val:.3f}" if val is not None else "-",
                             tok_s=f"{tps:,.0f}")
                bar.advance(self.step, self.elapsed)
                if self.step % cfg.eval_interval == 0:
                    t0 = time.perf_counter()
                    val = self._eval_and_save()
                    last_eval_step = self.step
                    self.elapsed += time.perf_counter() - t0
        except KeyboardInterrupt:
            interrupted = True  # fall through: save what we have, so the run can be resumed
        finally:
            bar.close()
        if last_eval_step != self.step:
            val = self._eval_and_save()
        plot_losses(self.out_dir / METRICS_FILE, self.out_dir / PLOT_FILE)
        return {"step": self.step, "elapsed": self.elapsed, "val_loss": val, "train_loss": self.losses[-1] if self.losses else None,
                "checkpoint": str(self.out_dir / CHECKPOINT_DIR), "interrupted": interrupted}

    def _eval_and_save(self) -> float | None:
        val = self.evaluate()
        if val is not None:
            self.val_losses.append((self.step, val))
            self.best_val = min(self.best_val, val)
            self._log({"step": self.step, "val_loss": val, "elapsed": round(self.elapsed, 2)})
        self.save()
        return val


def split_micro(raw: Any, n: int) -> list[Any]:
    """A global batch as ``n`` micro-batches: rows of a tensor, or items of a list of examples."""
    if n == 1:
        return [raw]
    if isinstance(raw, torch.Tensor):
        return list(torch.chunk(raw, n))
    size = -(-len(raw) // n)
    return [raw[i:i + size] for i in range(0, len(raw), size)]


class ProgressBar:
    """tqdm over steps, or over seconds when a wall-clock budget is set (its ETA is then right)."""

    def __init__(self, cfg: TrainConfig, step: int, elapsed: float):
        self.timed = cfg.max_time is not None
        self.bar = None
        if cfg.progress:
            from tqdm.auto import tqdm
            total, initial = (round(cfg.max_time), min(elapsed, cfg.max_time)) if self.timed else (cfg.steps, step)
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="s" if self.timed else "step",
                            dynamic_ncols=True, mininterval=0.5,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt}s [{elapsed}<{remaining}{postfix}]"
                            if self.timed else None)

    def note(self, **fields: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)

    def advance(self, step: int, elapsed: float) -> None:
        if self.bar is None:
            return
        if self.timed:
            self.bar.update(min(elapsed, self.bar.total) - self.bar.n)
        else:
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_losses(metrics_path: Path, png_path: Path) -> Path | None:
    """Train and validation loss against step, from metrics.jsonl, as a PNG."""
    if not metrics_path.is_file():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
