"""One short builder per family; ``build_model`` picks it from ``config.arch``."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .gpt import GPT, CausalLM, DecoderOutput, LMOutput

BUILDERS = {"decoder": CausalLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    try:
        return BUILDERS[cfg.arch](cfg)
    except KeyError:
        raise ValueError(f"no builder for arch {cfg.arch!r}; known: {sorted(BUILDERS)}") from None


__all__ = ["GPT", "CausalLM", "DecoderOutput", "LMOutput", "build_model", "BUILDERS"]
