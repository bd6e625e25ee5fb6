"""One training loop for every family, readable top to bottom.

    for step in steps:                       # until `steps` or `max_time`, whichever first
        lr = schedule(step, progress)
        for micro-batch in split(data.batch(step), grad_accum):
            loss = objective.loss(model(**batch.inputs), batch) * its share of the step's tokens
                                             # forward and loss under bf16 autocast when asked
            loss.backward()
        clip grad norm; optimizer step(s); zero grads
        every eval_interval: validation loss, checkpoint (atomic)
    final eval, checkpoint, the run's PNG (loss, tokens/s, learning rate)

Exact resume: the data sampler is a pure function of (seed, step), the checkpoint holds
weights, optimizer moments, the RNG state and the step, so a run stopped at step N and
resumed produces the same losses as one that never stopped.

Under torchrun the same loop runs in every process (see ``distributed.py``): the model is
wrapped in DDP or sharded with FSDP2, each rank's sampler yields its own rows, and only
rank 0 writes.
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
from ..files import atomic_write, atomic_write_text
from ..config import ModelConfig
from ..nn.block import Stack
from ..nn.lora import has_lora, merge_lora
from ..objectives import Objective
from .config import TrainConfig
from .distributed import (SINGLE, DistContext, all_reduce_max, all_reduce_sum, device_for, full_fsdp_state, gather_rng_states,
                          load_full_fsdp_state, no_sync, wrap)
from .optim import make_optimizers, optimizers_from_tensors, optimizers_to_tensors
from .schedule import SCHEDULES

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class NonFiniteLoss(FloatingPointError, ValueError):
    """Training stopped on NaN / inf (a ValueError too, so the CLI reports it in one line)."""


class MetricsWriteError(ValueError, OSError):
    """metrics.jsonl could not be written (disk full); the CLI reports it in one line."""


class BatchSource(Protocol):
    def batch(self, step: int) -> Any: ...


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
                 extra_state: dict[str, Any] | None = None, chat_template: str | None = None,
                 dist: DistContext | None = None):
        """Under torchrun pass ``dist`` (``distributed.from_env()``) and give each rank the
        samplers of its own rows; everything else is the same as with one process."""
        self.cfg, self.model_cfg, self.objective = cfg, model_cfg, objective
        self.dist = dist or SINGLE
        self.train_data, self.val_data = train_data, val_data
        self.tokenizer_json = tokenizer_json
        self.extra_state = extra_state or {}  # e.g. how the data was prepared, saved with checkpoints
        self.chat_template = chat_template  # carried along when fine-tuning a chat model
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.dist.rank)  # ranks drop out different units
        self.device = device_for(self.dist, cfg.device)
        self.model = model.to(self.device)
        for stack in (m for m in self.model.modules() if isinstance(m, Stack)):
            stack.checkpointing = cfg.activation_checkpointing
        self.wrapped = wrap(self.model, self.dist, cfg.parallel, self.device)  # DDP / FSDP2, or the model
        self.optimizers = make_optimizers(self.model, cfg, self.device)  # after FSDP has sharded the parameters
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else bf16_is_fast(self.device)
        self.forward = torch.compile(self.wrapped) if cfg.compile else self.wrapped
        # an objective whose loss applies the LM head itself gets hidden states, not logits
        self.forward_options = {"defer_head": True} if getattr(objective, "defer_head", False) else {}
        self.fsdp = self.dist.enabled and cfg.parallel == "fsdp"
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.elapsed = 0.0  # training seconds so far, carried across resumes
        self.losses: list[float] = []  # train loss per step of this process (tests read it)
        self.val_losses: list[tuple[int, float]] = []
        self.best_val = math.inf
        self.skipped_steps = 0  # steps whose loss or gradient was NaN / inf: no update, counted in metrics
        self.bad_in_a_row = 0

    # ---- state ------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path | None:
        """Write a checkpoint (rank 0; with FSDP every rank first helps gather the full state).
        Weights that are no longer finite are never written: that would replace the last good
        checkpoint with a broken one."""
        path = path or self.out_dir / CHECKPOINT_DIR
        bad = [name for name, p in self.model.named_parameters()
               if not bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all())]  # FSDP: own shard
        if all_reduce_sum(len(bad), self.dist, self.device):  # every rank stops, or none
            bad = bad or ["(on another rank)"]
            raise NonFiniteLoss(f"not saving step {self.step} to {path}: {len(bad)} weight tensors hold NaN or inf "
                                f"(first: {bad[0]}); the previous checkpoint is kept as it was")
        if self.fsdp:
            model, opt_tensors, groups = full_fsdp_state(self.model, self.optimizers, self.model_cfg, self.dist)
        else:
            model = self._plain_model()
            opt_tensors, groups = optimizers_to_tensors(self.optimizers)
        rng = gather_rng_states(self.dist)  # every rank's, so dropout continues exactly on resume
        if not self.dist.is_main:
            return None
        opt_tensors.update(rng)
        if torch.cuda.is_available():
            opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"step": self.step, "elapsed": self.elapsed, "train_config": self.cfg.to_dict(),
                 "optimizer_groups": groups, "best_val": None if math.isinf(self.best_val) else self.best_val,
                 "val_losses": self.val_losses, "world_size": self.dist.world_size,
                 "optimizer_format": "fsdp" if self.fsdp else "params", "skipped_steps": self.skipped_steps,
                 **self.extra_state}
        return save_checkpoint(path, model, self.model_cfg, self.tokenizer_json, state, opt_tensors,
                               chat_template=self.chat_template)

    def _plain_model(self) -> nn.Module:
        """The model to write: with LoRA adapters, a merged copy, so every checkpoint loads as a
        plain model of its config (the adapters themselves are not kept, so LoRA runs cannot resume)."""
        if not has_lora(self.model):
            return self.model
        return merge_lora(copy.deepcopy(self.model))

    def resume(self, path: str | Path) -> None:
        """Load weights, optimizer moments, RNG and step from a training checkpoint."""
        path = Path(path)
        state, tensors = load_trainer_state(path, TrainConfig.check_fields)
        if state.get("optimizer_format") == "fsdp":  # full state keyed by name: loads sharded or not
            load_full_fsdp_state(self.model, self.optimizers, path, tensors, state["optimizer_groups"])
        elif self.fsdp:
            raise ValueError("this checkpoint was written by one process or DDP, whose optimizer state FSDP "
                             "cannot reshard; resume it with parallel 'ddp' (or one process)")
        else:
            load_weights(self.model, path, self.device)
            optimizers_from_tensors(self.optimizers, {k: v.to(self.device) for k, v in tensors.items()},
                                   state["optimizer_groups"])
        own = f"rng.torch.{self.dist.rank}"
        if own in tensors:
            torch.set_rng_state(tensors[own])
        elif "rng.torch" in tensors and not self.dist.enabled:  # checkpoints from before ranks were counted
            torch.set_rng_state(tensors["rng.torch"])
        else:  # a rank the saving run did not have: a fresh stream of its own
            torch.manual_seed(self.cfg.seed + self.dist.rank + 7919 * state["step"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.val_losses = [tuple(v) for v in state.get("val_losses", [])]
        self.best_val = state["best_val"] if state.get("best_val") is not None else math.inf
        self.skipped_steps = state.get("skipped_steps", 0)
        self._forget_metrics_after(self.step)

    def _forget_metrics_after(self, step: int) -> None:
        """Drop metrics.jsonl records past the checkpoint (logged by the run that stopped after
        it): the resumed run logs those steps again, so each step appears once."""
        path = self.out_dir / METRICS_FILE
        if not self.dist.is_main or not path.is_file():
            return
        rows = read_metrics(path)
        kept = [r for r in rows if r["step"] <= step]
        if len(kept) != len(rows) or path.read_text(encoding="utf-8", errors="replace").count("\n") != len(rows):
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

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
        and the tokens it processed (over all ranks).

        Each micro-batch's mean loss is weighted by its share of the step's tokens (summed
        over ranks), times the number of ranks that DDP / FSDP average the gradients over: the
        gradient is that of the mean over the whole global batch, however it is split."""
        cfg = self.cfg
        lr = self.lr_now()
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        micro = [self.objective.prepare(m).to(self.device)
                 for m in split_micro(self.train_data.batch(self.step), cfg.grad_accum)]
        tokens = all_reduce_sum(sum(b.n_tokens for b in micro), self.dist, self.device)
        total = 0.0
        for i, batch in enumerate(micro):
            with no_sync(self.wrapped, self.dist, cfg.parallel, last=i == len(micro) - 1):
                with self.autocast():  # the loss too: a deferred LM head runs its matmuls in bf16
                    loss = self.objective.loss(self.forward(**batch.inputs, **self.forward_options), batch)
                (loss * (batch.n_tokens / tokens * self.dist.world_size)).backward()
            total += loss.item() * batch.n_tokens
        mean = all_reduce_sum(total, self.dist, self.device) / tokens  # every rank sees the same value
        norm = 0.0
        if cfg.grad_clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        finite = math.isfinite(mean) and math.isfinite(norm)
        for opt in self.optimizers:
            if finite:  # a NaN / inf loss or gradient would poison the weights and the moments
                opt.step()
            opt.zero_grad(set_to_none=True)
        self.step += 1
        if not finite:
            self.skipped_steps += 1
            self.bad_in_a_row += 1
        else:
            self.bad_in_a_row = 0
        return mean, int(tokens)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over ``eval_batches`` fixed validation batches (the same ones every time)."""
        if self.val_data is None:
            return None
        self.model.eval()
        loss_sum, tokens = 0.0, 0
        n = self.cfg.eval_batches
        if hasattr(self.val_data, "__len__"):  # a finite validation set: each batch once
            n = min(n, len(self.val_data))
        for i in range(n):
            batch = self.objective.prepare(self.val_data.batch(i)).to(self.device)
            with self.autocast():
                output = self.forward(**batch.inputs, **self.forward_options)
                loss_sum += self.objective.loss(output, batch).item() * batch.n_tokens
            tokens += batch.n_tokens
        self.model.train()
        return all_reduce_sum(loss_sum, self.dist, self.device) / all_reduce_sum(tokens, self.dist, self.device)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        path = self.out_dir / METRICS_FILE
        try:
            with open(path, "a", encoding="utf-8") as f:  # one write of a whole line
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # disk full: say so, and keep the last checkpoint as it is
            raise MetricsWriteError(f"{path}: could not append a record ({(e.strerror or str(e)).lower()}); "
                                    f"training stopped at step {self.step}, the last checkpoint is kept as it was") from None

    def out_of_time(self) -> bool:
        """Budget spent? Ranks agree (the slowest rank's clock), so they all stop at one step."""
        if self.cfg.max_time is None:
            return False
        return all_reduce_max(self.elapsed, self.dist, self.device) >= self.cfg.max_time

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train until ``steps`` or ``max_time``; evaluate and checkpoint along the way.

        ``until`` stops early at that step without changing the schedule (as if the run
        were interrupted there), which is how resume is tested.
        """
        cfg = self.cfg
        last = min(cfg.steps, until) if until is not None else cfg.steps
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        bar = ProgressBar(cfg, self.step, self.elapsed, enabled=self.dist.is_main)
        tokens_since, seconds_since = 0, 0.0  # since the last log line: tokens trained, seconds spent training them
        last_eval_step = -1
        val = None
        interrupted = False
        try:
            while self.step < last and not self.out_of_time():
                t0 = time.perf_counter()
                loss, tokens = self.train_step()
                took = time.perf_counter() - t0
                self.elapsed += took
                self.losses.append(loss)
                tokens_since += tokens
                seconds_since += took  # evaluation and checkpoints are not training time: tokens/s leaves them out
                if self.bad_in_a_row:
                    self._log({"step": self.step, "skipped": "non-finite loss or gradient", "bad_loss": str(loss),
                               "skipped_steps": self.skipped_steps})
                    if self.bad_in_a_row >= cfg.max_bad_steps:
                        raise NonFiniteLoss(self._non_finite_message(loss))
                if self.step % cfg.log_interval == 0 or self.step == cfg.steps:
                    tps = tokens_since / max(seconds_since, 1e-9)
                    tokens_since, seconds_since = 0, 0.0
                    self._log({"step": self.step, "loss": loss, "lr": self.lr_now(), "tokens_per_s": round(tps, 1),
                               "elapsed": round(self.elapsed, 2), **({"skipped_steps": self.skipped_steps}
                                                                     if self.skipped_steps else {})})
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
        if self.dist.is_main:
            plot_losses(self.out_dir / METRICS_FILE, self.out_dir / PLOT_FILE)
        return {"step": self.step, "elapsed": self.elapsed, "val_loss": val, "train_loss": self.losses[-1] if self.losses else None,
                "checkpoint": str(self.out_dir / CHECKPOINT_DIR), "interrupted": interrupted}

    def _non_finite_message(self, loss: float) -> str:
        ckpt = self.out_dir / CHECKPOINT_DIR
        kept = (f"the last good checkpoint, {ckpt}, is kept as it was" if ckpt.is_dir()
                else "no checkpoint had been written yet")
        return (f"training stopped at step {self.step}: the loss or gradient was {loss} for "
                f"{self.bad_in_a_row} steps in a row ({self.skipped_steps} skipped in all); {kept}. "
                "Try a lower lr, grad_clip, or bf16 off")

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

    def __init__(self, cfg: TrainConfig, step: int, elapsed: float, enabled: bool = True):
        self.timed = cfg.max_time is not None
        self.bar = None
        if cfg.progress and enabled:
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


SERIES = ("loss", "val_loss", "tokens_per_s", "lr")  # what the run's plot draws, as metrics.jsonl names them


def metric_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of each of ``SERIES`` in metrics.jsonl records (``read_metrics``): the train
    loss, the validation loss, training tokens per second and the learning rate. Records that do
    not carry a number for a series (a skipped step's note, an eval line) are left out of it."""
    out: dict[str, list[tuple[int, float]]] = {name: [] for name in SERIES}
    for row in rows:
        for name in SERIES:
            value = row.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name].append((int(row["step"]), float(value)))
    return out


def plot_losses(metrics_path: Path, png_path: Path) -> Path | None:
    """The run's curves against step, from metrics.jsonl, as one PNG of three panels: train and
    validation loss, training throughput (tokens/s) and the learning rate."""
    if not metrics_path.is_file():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = metric_series(read_metrics(metrics_path))
    fig, (loss_ax, speed_ax, lr_ax) = plt.subplots(3, 1, figsize=(7, 8), dpi=100, sharex=True,
                                                   gridspec_kw={"height_ratios": [2, 1, 1]})
    if series["loss"]:
        loss_ax.plot(*zip(*series["loss"]), label="train", lw=1)
    if series["val_loss"]:
        loss_ax.plot(*zip(*series["val_loss"]), "o-", label="validation", lw=1.5, ms=3)
    loss_ax.set_ylabel("loss (nats/token)")
    if series["loss"] or series["val_loss"]:
        loss_ax.legend()
    if series["tokens_per_s"]:
        speed_ax.plot(*zip(*series["tokens_per_s"]), color="tab:green", lw=1)
    speed_ax.set_ylabel("tokens/s")
    if series["lr"]:
        lr_ax.plot(*zip(*series["lr"]), color="tab:purple", lw=1)
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    lr_ax.set_xlabel("step")
    for ax in (loss_ax, speed_ax, lr_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png_path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a line cut short by a killed process is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows
