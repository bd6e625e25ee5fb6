"""The Batch every objective produces, and the Objective protocol the trainer calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..nn.loss import IGNORE_INDEX, linear_cross_entropy  # IGNORE_INDEX: targets that add nothing to the loss


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # keyword arguments of the model's forward
    targets: torch.Tensor  # e.g. (B, T) next-token ids, IGNORE_INDEX where no loss
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        """Tokens processed (for tokens/s): the objective's own count when it gives one
        (e.g. real target tokens of a padded batch), else the size of the first input."""
        if "n_tokens" in self.extra:
            return self.extra["n_tokens"]
        first = next(iter(self.inputs.values()))
        return first.numel()

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch({k: move(v) for k, v in self.inputs.items()}, move(self.targets),
                     {k: move(v) for k, v in self.extra.items()})


@dataclass
class SeededRows:
    """A raw batch for objectives that corrupt or blank text at random (T5, BART, GLM): token
    windows and one seed per row. Each row's randomness is a pure function of its seed, so a
    resumed run corrupts exactly as an unstopped one, validation batches are the same at every
    evaluation, and a micro-batch (a slice) keeps its rows' seeds."""

    ids: torch.Tensor  # (B, T) token ids
    seeds: torch.Tensor | np.ndarray  # (B,) int64

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, rows: slice) -> "SeededRows":  # the trainer's micro-batch split
        return SeededRows(self.ids[rows], self.seeds[rows])


def seeded_rows(ids: torch.Tensor, seed: int, step: int, salt: tuple[int, ...] = ()) -> SeededRows:
    """Windows (B, T) with per-row seeds drawn from (seed, step, *salt)."""
    rng = np.random.default_rng([seed, step, *salt])
    return SeededRows(ids, torch.from_numpy(rng.integers(0, 2**62, size=ids.shape[0])))


class SeededWindows:
    """Wraps a source of (B, L) token windows (e.g. ``data.WindowSampler``) so that each row
    also carries a seed, a pure function of (seed, step) like the windows themselves.
    ``trim_last`` drops the last column (the sampler's extra token for next-token targets,
    which a denoising objective does not need); ``salt`` separates this seed stream from
    others drawn from the same (seed, step)."""

    def __init__(self, source, seed: int, trim_last: bool = False, salt: tuple[int, ...] = ()):
        self.source, self.seed, self.trim_last, self.salt = source, seed, trim_last, salt

    def batch(self, step: int) -> SeededRows:
        ids = self.source.batch(step)  # (B, L)
        return seeded_rows(ids[:, :-1] if self.trim_last else ids, self.seed, step, self.salt)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (a dataclass with ``.logits``, applying a deferred head
    when the forward left it to the loss), or the tensor itself."""
    if isinstance(output, torch.Tensor):
        return output
    if output.logits is None and getattr(output, "head", None) is not None:
        return output.head.logits()
    return output.logits


def token_cross_entropy(output: Any, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy in fp32 over the targets (B, T) that are not IGNORE_INDEX. A model
    output with a deferred head (``defer_head=True``) goes through ``nn.loss.linear_cross_entropy``,
    chunk by chunk, without the (B, T, V) logits; logits go through ``F.cross_entropy``."""
    head = getattr(output, "head", None)
    if head is not None and getattr(output, "logits", None) is None:
        return linear_cross_entropy(head.features, head.weight, head.bias, targets, label_smoothing)
    return F.cross_entropy(logits_of(output).flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


class Objective(Protocol):
    """``prepare`` turns raw data into a Batch, ``loss`` scores the model's output on it. An
    objective with ``defer_head = True`` asks the trainer to call the model with
    ``defer_head=True``: no logits, the loss applies the LM head chunk by chunk."""

    def prepare(self, raw: Any) -> Batch: ...

    def loss(self, output: Any, batch: Batch) -> torch.Tensor:
        """The loss of a model ``output`` (its dataclass: logits and, for some families, more
        such as next-sentence logits) or of bare logits."""
        ...
