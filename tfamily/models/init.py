"""Weight initialisation shared by the families (GPT-2 / BERT style)."""

from __future__ import annotations

import math

from torch import nn

from ..config import ModelConfig
from ..nn.norms import RMSNorm
from ..nn.positions import LearnedPositions


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """N(0, init_std) for matrices and tables, zeros for biases, ones for norm gains.

    With ``scale_residual_init`` the projections that write into the residual stream
    (attention ``out`` and MLP ``fc_out``) get std / sqrt(2 * n_layer), so the residual
    variance does not grow with depth (GPT-2 paper, §2.3).
    """
    resid_std = cfg.init_std / math.sqrt(2 * cfg.n_layer) if cfg.scale_residual_init else cfg.init_std
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = resid_std if name.endswith((".out", ".fc_out")) else cfg.init_std
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, cfg.init_std)
        elif isinstance(module, LearnedPositions):
            nn.init.normal_(module.weight, 0.0, cfg.init_std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
