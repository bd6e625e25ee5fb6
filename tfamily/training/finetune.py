"""Fine-tuning by epochs, keeping the epoch that scores best on validation."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

from ..evaluation.tasks import headline


@dataclass
class BestEpoch:
    epoch: int = 0
    score: float = -math.inf
    state: dict | None = None  # weights of the best epoch when it is not the last one, else None
    scores: object = None  # the best epoch's whole val scores (what score_val returned)
    history: list = field(default_factory=list)  # [{"epoch", "step", "score"}]


def fit_keeping_best_epoch(trainer, per_epoch: int, score_val) -> BestEpoch:
    """Train epoch by epoch (one schedule over the whole run), scoring the task metric on val
    after each; keep a copy of the best epoch's weights. Val loss falls behind accuracy as a
    fine-tuned model grows confident, so the epoch is chosen by the metric itself. Scoring
    time counts against the trainer's time budget."""
    best = BestEpoch()
    epoch = 0
    while trainer.step < trainer.cfg.steps and not trainer.out_of_time():
        epoch += 1
        result = trainer.fit(until=min(trainer.cfg.steps, epoch * per_epoch))
        t0 = time.perf_counter()
        scores = score_val()
        score = headline(scores)
        trainer.model.train()
        trainer.elapsed += time.perf_counter() - t0
        best.history.append({"epoch": epoch, "step": trainer.step, "score": round(score, 4)})
        print(f"epoch {epoch} (step {trainer.step}): val {score:.4f}", file=sys.stderr)
        if score > best.score:
            best.epoch, best.score, best.scores = epoch, score, scores
            snapshot = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if result["interrupted"]:
            break
    if best.epoch and best.epoch != epoch:
        best.state = snapshot
    return best
