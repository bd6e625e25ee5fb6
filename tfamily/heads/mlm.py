"""BERT's pretraining heads (Devlin et al. 2019, section 3.1 and appendix A.2)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.linear import Linear, linear_act
from ..nn.norms import make_norm


class MLMHead(nn.Module):
    """Masked-LM logits: a transform (dense, activation, norm) and a vocabulary projection
    whose matrix is the token embedding (tied by the model) plus a bias of its own."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(cfg.d_model, cfg.d_model)
        self.activation = cfg.activation
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.decoder = Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, V)
        return self.decoder(self.norm(linear_act(hidden, self.dense, self.activation)))


class Pooler(nn.Module):
    """The sequence summary BERT classifies from: tanh(W h_0 + b) of the first ([CLS]) token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, d)
        return torch.tanh(self.dense(hidden[:, 0]))


class NSPHead(nn.Module):
    """Next-sentence prediction from the pooled [CLS]: logits (B, 2); class 0 = B follows A."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = Linear(cfg.d_model, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, 2)
        return self.proj(pooled)
