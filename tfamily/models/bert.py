"""BERT (Devlin et al. 2019): a bidirectional encoder, pretrained by masked-LM (+ next sentence).

    ids (B, T), token_type_ids (B, T) ─ token + segment + learned position embeddings
                                      ─ LayerNorm ─ dropout
                                      ─ Stack of post-LN Blocks, every token sees every real token
                                      ─ hidden (B, T, d) ─┬ MLM head (tied to the token embedding) ─ (B, T, V)
                                                          └ pooler (tanh dense on [CLS]) ─ NSP head ─ (B, 2)

The same ``EncoderBackbone`` carries the fine-tuning heads (models/tasks.py). Only the mask
differs from GPT's stack: padding, not causality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..heads import MLMHead, NSPHead, Pooler
from ..nn import Stack, make_positions, make_rotary, positions_from_mask
from ..nn.masks import encoder_mask
from ..nn.norms import make_norm
from .gpt import embed
from .init import init_weights


@dataclass
class EncoderOutput:
    hidden: torch.Tensor  # (B, T, d_model)


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # (B, T, V)
    nsp_logits: torch.Tensor | None  # (B, 2): class 0 = sentence B follows A, 1 = B is random
    hidden: torch.Tensor  # (B, T, d_model)
    pooled: torch.Tensor | None  # (B, d_model)


class EncoderBackbone(nn.Module):
    """The backbone: embeddings (with segments and an embedding norm when configured) and a
    bidirectional stack. Returns hidden states."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = make_positions(cfg.position, cfg.max_seq_len, cfg.d_model)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.emb_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.embed_norm else None
        self.rotary = make_rotary(cfg.position, cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)
        self.drop = nn.Dropout(cfg.dropout)
        self.stack = Stack(cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> EncoderOutput:
        """ids: (B, T); attention_mask: (B, T) True = real token; token_type_ids: (B, T) segment
        0 / 1 (default all 0); positions default to 0.. counted over real tokens."""
        b, t = ids.shape
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_seq_len={self.cfg.max_seq_len}")
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            if attention_mask.shape != (b, t):
                raise ValueError(f"attention_mask must be (batch, tokens) = {(b, t)}, got {tuple(attention_mask.shape)}")
        if positions is None:
            positions = (positions_from_mask(attention_mask) if attention_mask is not None
                         else torch.arange(t, device=ids.device).expand(b, t))
        x = embed(self.tok_emb, self.pos_emb, ids, positions, self.cfg.scale_embeddings)  # (B, T, d)
        if self.type_emb is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(ids)
            x = x + self.type_emb(types)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but this model has no segment embeddings (type_vocab_size=0)")
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        rotary = self.rotary(positions) if self.rotary is not None else None
        return EncoderOutput(self.stack(x, mask=encoder_mask(attention_mask), rotary=rotary))


class MaskedLM(nn.Module):
    """Encoder + MLM head (+ pooler and NSP head when ``cfg.nsp``): BERT as pretrained."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = EncoderBackbone(cfg)
        self.mlm = MLMHead(cfg)
        self.pooler = Pooler(cfg) if cfg.nsp else None
        self.nsp = NSPHead(cfg) if cfg.nsp else None
        init_weights(self, cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.cfg.tie_embeddings:
            self.mlm.decoder.weight = self.backbone.tok_emb.weight

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> MaskedLMOutput:
        hidden = self.backbone(ids, attention_mask, token_type_ids, positions).hidden
        pooled = self.pooler(hidden) if self.pooler is not None else None
        nsp = self.nsp(pooled) if self.nsp is not None else None
        return MaskedLMOutput(self.mlm(hidden), nsp, hidden, pooled)
