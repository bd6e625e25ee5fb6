"""The Batch every objective produces, and the Objective protocol the trainer calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

IGNORE_INDEX = -100  # targets with this value contribute nothing to the loss


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


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (a dataclass with ``.logits``), or the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.logits


class Objective(Protocol):
    def prepare(self, raw: Any) -> Batch: ...

    def loss(self, output: Any, batch: Batch) -> torch.Tensor:
        """The loss of a model ``output`` (its dataclass: logits and, for some families, more
        such as next-sentence logits) or of bare logits."""
        ...
