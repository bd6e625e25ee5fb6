"""Weight initialisation shared by the families (GPT-2 / BERT style)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.norms import RMSNorm
from ..nn.positions import LearnedPositions


RECURRENT_TABLE_STD = 1.0  # nn.Embedding's own default, what torch's LSTM / GRU init expects as input


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """N(0, init_std) for matrices and tables, zeros for biases, ones for norm gains.

    With ``scale_residual_init`` the projections that write into the residual stream
    (attention ``out`` and MLP ``fc_out``) get std / sqrt(2 * n_layer), so the residual
    variance does not grow with depth (GPT-2 paper, §2.3).

    The recurrent families' token tables are drawn N(0, 1) instead (``RECURRENT_TABLE_STD``),
    and their LSTM / GRU layers keep torch's own init, uniform within +-1/sqrt(units), which
    assumes inputs of unit variance. Fed a table drawn at 0.02, those layers see inputs some
    fifty times smaller than their biases and a token barely moves the state: an LSTM on the
    key-value recall task (benchmarks/why_transformer.py, distance 15) stayed at chance for
    500 steps with the table at 0.02 and reached 100 % in 200 steps with it at 1.0 (and at
    chance with 0.1, after 200 steps), all at lr 3e-3.
    """
    resid_std = cfg.init_std / math.sqrt(2 * cfg.n_layer) if cfg.scale_residual_init else cfg.init_std
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if cfg.init_fan_in:
                _fan_in_init(name, module, cfg)
            else:
                std = resid_std if name.endswith((".out", ".fc_out")) else cfg.init_std
                nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, RECURRENT_TABLE_STD if recurrent else cfg.init_std)
        elif isinstance(module, LearnedPositions):
            nn.init.normal_(module.weight, 0.0, cfg.init_std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def _fan_in_init(name: str, linear: nn.Linear, cfg: ModelConfig) -> None:
    """N(0, 1 / fan_in) (T5). With ``attention_scale`` 1.0 the scores are not divided by
    sqrt(head size), so the query projection is drawn that much smaller instead."""
    std = linear.in_features ** -0.5
    nn.init.normal_(linear.weight, 0.0, std)
    if cfg.attention_scale is None:
        return
    q_rows = cfg.n_head * cfg.head_dim
    fold = cfg.attention_scale * cfg.head_dim ** 0.5  # 1.0 -> shrink q by 1/sqrt(head size)
    with torch.no_grad():
        if name.endswith(".qkv"):
            linear.weight[:q_rows] /= fold
        elif name.endswith(".q"):
            linear.weight /= fold
