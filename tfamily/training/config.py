"""TrainConfig: every knob of the training loop, validated, JSON-serialisable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..config import ConfigError, ValidatedConfig


@dataclass
class TrainConfig(ValidatedConfig):
    """Defaults are a recipe measured for a small model on a laptop CPU in minutes (see the
    README's results); larger models want a run config with a lower lr and bigger batches."""

    _kind = "training"
    out_dir: str = "runs/run"
    steps: int = 5000  # optimizer steps (the schedule's length unless max_time ends first)
    max_time: Optional[float] = None  # wall-clock budget in seconds; the schedule follows it too
    batch_size: int = 16  # sequences per optimizer step (split over grad_accum micro-batches)
    batch_tokens: Optional[int] = None  # sequence-to-sequence: batches of about this many tokens, by length
    seq_len: int = 64
    grad_accum: int = 1
    lr: float = 6e-3
    min_lr: Optional[float] = None  # end of the cosine; None = lr / 10
    warmup: int = 50  # steps of linear warm-up
    schedule: Literal["cosine", "constant", "inverse_sqrt"] = "cosine"  # inverse_sqrt: Vaswani et al. 2017, eq. 3
    label_smoothing: float = 0.0  # cross-entropy against (1 - eps) one-hot + eps uniform (Szegedy et al. 2016)
    optimizer: Literal["adamw", "muon"] = "muon"  # muon: Muon on hidden matrices, AdamW on the rest
    muon_momentum: float = 0.95
    weight_decay: float = 0.1  # on matrices only, not on biases, norms
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: Optional[float] = 1.0  # max global grad norm; None = no clipping
    max_bad_steps: int = 5  # a NaN / inf loss or gradient skips its step; this many in a row stop the run
    eval_interval: int = 250  # steps between validation passes (and checkpoints)
    eval_batches: int = 20
    log_interval: int = 10  # steps between metrics.jsonl lines
    bf16: Optional[bool] = None  # bf16 autocast (weights and optimizer stay fp32); None = where the hardware is fast at it
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute each block's activations in backward: less memory, ~1/3 more compute
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: DDP (a copy per rank) or FSDP2 (sharded weights)
    seed: int = 1337
    progress: bool = True  # tqdm progress bar
    device: str = "auto"  # "auto" = cuda if available else cpu
    threads: Optional[int] = None  # torch intra-op threads on CPU; None = torch default

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_interval", "eval_batches", "log_interval",
                     "max_bad_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.max_time is not None and self.max_time <= 0:
            raise ConfigError(f"max_time must be positive seconds, got {self.max_time}")
        if self.batch_tokens is not None and self.batch_tokens <= 0:
            raise ConfigError(f"batch_tokens must be positive, got {self.batch_tokens}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.parallel == "fsdp" and self.optimizer == "muon":
            raise ConfigError("parallel='fsdp' shards the matrices that Muon orthogonalises whole; "
                              "use optimizer 'adamw' with FSDP")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr
