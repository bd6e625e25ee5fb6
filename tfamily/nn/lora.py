"""LoRA: low-rank adapters on chosen linear layers (Hu et al., 2021, "LoRA: Low-Rank
Adaptation of Large Language Models").

    y = W x + (alpha / r) * B A x        W frozen (out, in); A (r, in); B (out, r), zeros at start

Only A and B train, so a fine-tune stores r * (in + out) numbers per layer instead of
in * out; ``merge_lora`` folds B A into W afterwards, leaving a plain model to save,
export or serve.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .block import Stack

DEFAULT_TARGETS = ("qkv", "out")  # attention projections, as in the paper's experiments


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # like nn.Linear; B = 0 keeps the start exact
        self.scale = alpha / r
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return self.base(x) + (self.drop(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain layer of the base's class with W + scale * B A (trainable again, as a fresh layer would be)."""
        w = self.base.weight + self.scale * (self.lora_b @ self.lora_a).to(self.base.weight.dtype)
        out = type(self.base)(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=w.device, dtype=w.dtype)
        out.weight.copy_(w)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


def _linear_slots(model: nn.Module, targets: Sequence[str]):
    """(parent, attribute) of every nn.Linear inside a Transformer stack whose attribute name is a target."""
    for stack in (m for m in model.modules() if isinstance(m, Stack)):
        for parent in stack.modules():
            for name, child in parent.named_children():
                if name in targets and isinstance(child, nn.Linear):
                    yield parent, name


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets: Sequence[str] = DEFAULT_TARGETS,
             dropout: float = 0.0) -> int:
    """Freeze the model and put adapters on the target linears; returns the trainable count.

    ``targets`` are the layers' attribute names in tfamily's blocks: ``qkv`` and ``out``
    (attention), ``fc_in``, ``fc_gate``, ``fc_out`` (feed-forward).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    slots = list(_linear_slots(model, targets))
    if not slots:
        raise ValueError(f"no linear layer named {', '.join(targets)} inside the model's blocks")
    for parent, name in slots:
        setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight, in place; the model is plain (and trainable) again."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
