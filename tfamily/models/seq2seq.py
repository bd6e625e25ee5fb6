"""The encoder-decoder Transformer (Vaswani et al. 2017), the shape of Marian, BART and T5.

    source ids (B, S) ─ embedding (+ positions) ─ encoder Stack (bidirectional, padding mask)
                      ─ memory (B, S, d)  ──────────────────────────────┐
    target ids (B, T) ─ embedding (+ positions) ─ decoder Stack (causal self-attention,
                        cross-attention to the memory under the source's padding mask)
                      ─ hidden (B, T, d) ─ LM head (tied to the target embedding) ─ logits (B, T, V)

Both stacks are the shared ``Stack``; the decoder's blocks have the cross-attention
sub-layer switched on. With ``share_encoder_embeddings`` (a joint source/target vocabulary)
one table embeds both sides and, with ``tie_embeddings``, also projects to the vocabulary:
the paper's three-way sharing (section 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..nn import KVCache, Linear, Stack, make_positions, make_rotary, positions_from_mask
from ..nn.loss import DeferredHead, head_or_deferred, tied_table
from ..nn.masks import decoder_mask, encoder_mask, padding_mask
from ..nn.norms import make_norm
from ..nn.positions import make_relative_bias
from .gpt import embed
from .init import init_weights


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor | None  # (B, T, V); None with defer_head
    hidden: torch.Tensor  # (B, T, d_model), the decoder's
    memory: torch.Tensor  # (B, S, d_model), the encoder's
    cache: KVCache | None
    head: DeferredHead | None = None  # with defer_head: the head's input and weights, for the loss


class EncoderDecoder(nn.Module):
    """Encoder + decoder + LM head. ``encode`` once, then ``decode`` as often as needed
    (every step of a beam search reuses the same memory and a KV cache)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)  # target side (and source, when shared)
        self.src_emb = None if cfg.share_encoder_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.enc_pos = make_positions(cfg.position, cfg.max_seq_len, cfg.d_model, cfg.position_offset)
        self.dec_pos = make_positions(cfg.position, cfg.max_seq_len, cfg.d_model, cfg.position_offset)
        self.rotary = make_rotary(cfg.position, cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)
        self.enc_rel = make_relative_bias(cfg, bidirectional=True)  # T5: a learned bias per distance bucket
        self.dec_rel = make_relative_bias(cfg, bidirectional=False)
        self.enc_norm = self.dec_norm = None
        if cfg.embed_norm:  # BART: a LayerNorm on each side's embeddings
            self.enc_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
            self.dec_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Stack(cfg.replace(n_layer=cfg.encoder_layers))
        self.decoder = Stack(cfg, cross_attention=True)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=cfg.lm_head_bias)
        init_weights(self, cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    # ---- the two halves -----------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids: (B, S); src_mask: (B, S), True = real token (None: no padding) -> memory (B, S, d)."""
        b, s = src_ids.shape
        self._check_length("source", s)
        if src_mask is not None:
            src_mask = src_mask.bool()
            positions = positions_from_mask(src_mask)
        else:
            positions = torch.arange(s, device=src_ids.device).expand(b, s)
        table = self.src_emb if self.src_emb is not None else self.tok_emb
        x = embed(table, self.enc_pos, src_ids, positions, self.cfg.scale_embeddings)
        x = self.drop(self.enc_norm(x) if self.enc_norm is not None else x)
        rotary = self.rotary(positions) if self.rotary is not None else None
        bias = None
        if self.enc_rel is not None:  # distances in index order: left padding shifts both sides alike
            idx = torch.arange(s, device=src_ids.device)
            bias = self.enc_rel(idx, idx)  # (1, H, S, S)
        return self.encoder(x, mask=encoder_mask(src_mask), rotary=rotary, bias=bias)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None,
               tgt_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """tgt_ids (B, T) (the new ones when a cache holds the earlier) -> hidden (B, T, d).

        Training needs no ``tgt_mask``: targets are right-padded, and causal attention already
        keeps real tokens from seeing the padding after them."""
        b, t = tgt_ids.shape
        past = cache.length if cache is not None else 0
        self._check_length("target", past + t)
        if tgt_mask is not None:
            tgt_mask = tgt_mask.bool()
            positions = positions_from_mask(tgt_mask)[:, past:]
        else:
            positions = torch.arange(past, past + t, device=tgt_ids.device).expand(b, t)
        x = embed(self.tok_emb, self.dec_pos, tgt_ids, positions, self.cfg.scale_embeddings)
        x = self.drop(self.dec_norm(x) if self.dec_norm is not None else x)
        rotary = self.rotary(positions) if self.rotary is not None else None
        bias = None
        if self.dec_rel is not None:  # the new queries against every key so far
            keys = torch.arange(past + t, device=tgt_ids.device)
            bias = self.dec_rel(keys[past:], keys)  # (1, H, T, past + T)
        mask, is_causal = decoder_mask(t, past + t, tgt_mask, tgt_ids.device)
        memory_mask = padding_mask(src_mask.bool()) if src_mask is not None else None  # (B, 1, 1, S)
        h = self.decoder(x, mask=mask, is_causal=is_causal, cache=cache, memory=memory, memory_mask=memory_mask,
                         rotary=rotary, bias=bias)
        if cache is not None:
            cache.advance(t)
        return h

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False, defer_head: bool = False) -> Seq2SeqOutput:
        """Teacher-forced logits (B, T, V) for target inputs ``tgt_ids`` given the source.
        Pass ``memory`` to skip the encoder (it was run already). ``defer_head``: no logits,
        the head is left to the loss (see ``CausalLM``)."""
        with tied_table(self.lm_head, self.tok_emb, defer_head) as head_weight:
            if memory is None:
                memory = self.encode(src_ids, src_mask)
            h = self.decode(tgt_ids, memory, src_mask, tgt_mask, cache)
        out = h[:, -1:] if last_only else h
        if self.cfg.scale_tied_output:  # T5: the tied embedding is also the output matrix, at d^-0.5
            out = out * self.cfg.d_model ** -0.5
        logits, head = head_or_deferred(self.lm_head, out, defer_head, head_weight)
        return Seq2SeqOutput(logits, h, memory, cache, head)

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """The decoder's self-attention cache (its cross K/V are added on first use)."""
        cfg, p = self.cfg, self.tok_emb.weight
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head, max_len or cfg.max_seq_len, cfg.head_dim,
                       dtype or p.dtype, p.device)

    def _check_length(self, side: str, n: int) -> None:
        if n > self.cfg.max_seq_len:
            raise ValueError(f"{side} of {n} tokens is longer than max_seq_len={self.cfg.max_seq_len}")
