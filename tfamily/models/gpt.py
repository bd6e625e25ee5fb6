"""GPT: a decoder-only Transformer (GPT-1, GPT-2 and their descendants).

    ids (B, T) ─ token embedding (+ position embedding: learned / sinusoidal) ─ dropout
               ─ Stack of causal Blocks (pre- or post-LN, per config; rotary positions
                 turn q and k inside attention instead of being added)
               ─ hidden (B, T, d) ─ LM head (tied to the token embedding) ─ logits (B, T, V)

Everything here is wiring: the parts live in ``tfamily.nn``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..nn import KVCache, Linear, Stack, make_positions, make_rotary, positions_from_mask
from ..nn.loss import DeferredHead, head_or_deferred, tied_table
from ..nn.masks import decoder_mask
from .init import init_weights


@dataclass
class DecoderOutput:
    hidden: torch.Tensor  # (B, T, d_model)
    cache: KVCache | None


@dataclass
class LMOutput:
    logits: torch.Tensor | None  # (B, T, V); None when the forward deferred the head
    hidden: torch.Tensor  # (B, T, d_model)
    cache: KVCache | None
    head: DeferredHead | None = None  # with defer_head: the head's input and weights, for the loss


def embed(tok_emb: nn.Embedding, pos_emb: nn.Module | None, ids: torch.Tensor, positions: torch.Tensor,
          scale: bool = False) -> torch.Tensor:
    """Token embeddings (times sqrt(d_model) when ``scale``, as in the original Transformer,
    so they are not drowned by the unit-size sinusoids) plus additive positions.
    ids, positions: (B, T) -> (B, T, d)."""
    x = tok_emb(ids)
    if scale:
        x = x * (x.shape[-1] ** 0.5)
    if pos_emb is not None:
        x = x + pos_emb(positions)
    return x


def check_inputs(cfg: ModelConfig, ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 cache: KVCache | None) -> tuple[int, int, int, torch.Tensor | None]:
    """(B, T, cached length, bool mask) of a decoder's inputs, with clear errors when the
    sequence outgrows the context or the mask does not cover the cached + new tokens."""
    b, t = ids.shape
    past = cache.length if cache is not None else 0
    if past + t > cfg.max_seq_len:
        raise ValueError(f"sequence of {past + t} tokens is longer than max_seq_len={cfg.max_seq_len}")
    if attention_mask is not None:
        attention_mask = attention_mask.bool()
        if attention_mask.shape != (b, past + t):
            raise ValueError(f"attention_mask must be (batch, cached + new) = {(b, past + t)}, "
                             f"got {tuple(attention_mask.shape)}")
    return b, t, past, attention_mask


class DecoderBackbone(nn.Module):
    """The backbone: embeddings and a causal stack. Returns hidden states, not logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = make_positions(cfg.position, cfg.max_seq_len, cfg.d_model)  # additive, or None
        self.rotary = make_rotary(cfg.position, cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)  # or None
        self.drop = nn.Dropout(cfg.dropout)
        self.stack = Stack(cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None) -> DecoderOutput:
        """ids: (B, T). attention_mask: (B, S) bool/int, True = real token, covering the cached
        positions and these T (S = cache length + T). positions: (B, T); by default counted
        over real tokens, so left padding does not shift them."""
        b, t, past, attention_mask = check_inputs(self.cfg, ids, attention_mask, cache)
        if positions is None:
            if attention_mask is not None:
                positions = positions_from_mask(attention_mask)[:, past:]
            else:
                positions = torch.arange(past, past + t, device=ids.device).expand(b, t)
        x = self.drop(embed(self.tok_emb, self.pos_emb, ids, positions, self.cfg.scale_embeddings))  # (B, T, d)
        rotary = self.rotary(positions) if self.rotary is not None else None  # 2 x (B, T, head_dim)
        mask, is_causal = decoder_mask(t, past + t, attention_mask, ids.device)
        x = self.stack(x, mask=mask, is_causal=is_causal, cache=cache, rotary=rotary)
        if cache is not None:
            cache.advance(t)
        return DecoderOutput(x, cache)

class BackboneLM(nn.Module):
    """A backbone and an LM head that shares its token embedding when ``tie_embeddings``; the
    decoder-style families (GPT, GLM, Transformer-XL) differ only in their backbone."""

    backbone_class: type[nn.Module]

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = self.backbone_class(cfg)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=cfg.lm_head_bias)
        init_weights(self, cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the LM head with the token embedding when the config says so (also after
        loading with ``assign=True``, which installs each tensor separately)."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.tok_emb.weight

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A KV cache in the dtype and on the device of the token embedding (which stays a plain
        tensor when the linear layers are quantised, ``nn.quant``)."""
        cfg, p = self.cfg, self.backbone.tok_emb.weight
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head, max_len or cfg.max_seq_len, cfg.head_dim,
                       dtype or p.dtype, p.device)


class CausalLM(BackboneLM):
    """The decoder backbone (GPT, Llama) + LM head. The head shares the token embedding when ``tie_embeddings``."""

    backbone_class = DecoderBackbone

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, defer_head: bool = False) -> LMOutput:
        """``last_only`` computes logits for the final position only (decoding needs no more);
        ``defer_head`` computes none and leaves the head to the loss (``nn.loss``: training's
        cross-entropy then never materialises the (B, T, V) logits)."""
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            out = self.backbone(ids, attention_mask, positions, cache)
        h = out.hidden[:, -1:] if last_only else out.hidden
        logits, head = head_or_deferred(self.lm_head, h, defer_head, head_weight)
        return LMOutput(logits, out.hidden, out.cache, head)
