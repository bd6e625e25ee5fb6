"""One Transformer block and a stack of them, shared by every family.

    pre-LN  (GPT-2, T5, Llama):   x = x + Attn(LN(x));   x = x + MLP(LN(x))
    post-LN (GPT-1, BERT, 2017):  x = LN(x + Attn(x));   x = LN(x + MLP(x))

Encoder, decoder and prefix-LM differ only by the mask handed in; an optional
cross-attention sub-layer sits between the two for encoder-decoder models.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import Attention, Rotary
from .cache import KVCache
from .mlp import MLP
from .norms import make_norm
from .positions import head_tables


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, cross_attention: bool = False):
        super().__init__()
        self.pre_norm = cfg.norm_placement == "pre"
        norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
        self.norm1 = norm()
        heads = dict(head_dim=cfg.head_dim, scale=cfg.attention_scale, qkv_bias=cfg.bias or cfg.qkv_bias)
        self.attn = Attention(cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.bias, cfg.dropout, **heads)
        if cross_attention:
            self.norm_cross = norm()
            self.cross_attn = Attention(cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.bias, cfg.dropout, cross=True,
                                        **heads)
        else:
            self.norm_cross = self.cross_attn = None
        self.norm2 = norm()
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.activation, cfg.gated_mlp, cfg.bias, cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, layer: int = 0,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                rotary: Rotary | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``rotary`` (``positions.head_tables``) turns self-attention's q and k, and ``bias`` (T5's relative
        positions) is added to its scores; cross-attention keys are another sequence's, whose
        positions are not comparable, so it gets neither."""
        x = self._sublayer(x, self.norm1, lambda h: self.attn(h, mask, is_causal, cache, layer, rotary=rotary,
                                                              bias=bias))
        if self.cross_attn is not None:
            x = self._sublayer(x, self.norm_cross, lambda h: self.cross_attn(h, memory_mask, cache=cache, layer=layer,
                                                                                    memory=memory))
        return self._sublayer(x, self.norm2, self.mlp)


class Stack(nn.Module):
    """n_layer blocks and (for pre-LN models) a final norm: hidden states in and out."""

    def __init__(self, cfg: ModelConfig, cross_attention: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg, cross_attention) for _ in range(cfg.n_layer))
        self.norm_f = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.final_norm else None
        self.checkpointing = False  # activation checkpointing, switched on by the trainer

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, rotary: Rotary | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model). ``rotary`` (cos, sin), each (B, T, head_dim) from
        ``RotaryEmbedding``, and ``bias`` (relative position scores) are computed once by the
        backbone and shared by every layer; the rotary tables are cast and shaped for the
        heads here, once, not in each layer."""
        if rotary is not None:
            rotary = head_tables(*rotary, x.dtype)  # 2 x (B, T, 1, head_dim)
        for i, block in enumerate(self.blocks):
            if self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, mask, is_causal, cache, i, memory, memory_mask, rotary, bias, use_reentrant=False)
            else:
                x = block(x, mask, is_causal, cache, i, memory, memory_mask, rotary, bias)
        return self.norm_f(x) if self.norm_f is not None else x
