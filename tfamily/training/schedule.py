"""Learning-rate schedules as pure functions of training progress."""

from __future__ import annotations

import math


def warmup_cosine(step: int, progress: float, lr: float, final_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from lr to final_lr.

    ``progress`` in [0, 1] is how far through the budget training is: steps / total, or
    elapsed / max_time when a wall-clock budget ends first, so a timed run still anneals.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    return final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def constant_with_warmup(step: int, progress: float, lr: float, final_lr: float, warmup: int) -> float:
    return lr * (step + 1) / warmup if step < warmup else lr


def inverse_sqrt(step: int, progress: float, lr: float, final_lr: float, warmup: int) -> float:
    """The original Transformer's schedule (Vaswani et al. 2017, eq. 3), peaking at ``lr``:
    linear warm-up, then decay with 1 / sqrt(step). The paper's d_model^-0.5 * warmup^-0.5
    factor is the peak, which here is ``lr`` itself. It ignores the budget (``progress``)."""
    s = step + 1
    w = max(1, warmup)
    return lr * min(s / w, (w / s) ** 0.5)


SCHEDULES = {"cosine": warmup_cosine, "constant": constant_with_warmup, "inverse_sqrt": inverse_sqrt}
