"""Transformer-XL (Dai et al. 2019): a causal decoder with segment-level recurrence and
relative positions, built from the shared blocks.

    ids (B, T) ─ token embedding (x sqrt(d_model)) ─ dropout
               ─ Stack of causal Blocks, where each layer's attention
                   · takes keys/values from [recurrence of that layer ; this segment]  (XLRecurrence, as the cache)
                   · adds relative position scores (b) + (d) and shifts q by u      (XLRelativePositions, as the bias)
               ─ hidden (B, T, d) ─ LM head (tied) ─ logits (B, T, V)

No position is added to the tokens: the only positional signal is the sinusoid of the
distance between query and key, which is why a recurrence computed for one segment can be
reused by the next (absolute positions would collide).

A sequence longer than ``max_seq_len`` is run as consecutive segments of that length,
carrying the recurrence from one to the next (the paper's training and evaluation scheme):
training feeds windows of several segments, and every segment's loss back-propagates into
that segment only, as the recurrence is detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..nn import Stack
from ..nn.cache import XLRecurrence
from ..nn.loss import DeferredHead, head_or_deferred, tied_table
from ..nn.masks import decoder_mask
from ..nn.xl import XLRelativePositions
from .gpt import BackboneLM


@dataclass
class XLOutput:
    logits: torch.Tensor | None  # (B, T, V); (B, 1, V) with last_only; None with defer_head
    hidden: torch.Tensor  # (B, T, d_model)
    recurrence: XLRecurrence | None  # the recurrence after these tokens (the same object that came in, advanced)
    head: DeferredHead | None = None  # with defer_head: the head's input and weights, for the loss


class TransformerXLBackbone(nn.Module):
    """Embedding, relative positions and the shared causal stack. Returns hidden states."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.relative = XLRelativePositions(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.head_dim,
                                            cfg.attention_scale, cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)
        self.stack = Stack(cfg)

    def segment(self, ids: torch.Tensor, key_valid: torch.Tensor | None, recurrence: XLRecurrence | None) -> torch.Tensor:
        """One segment: ids (B, T), T <= max_seq_len; key_valid (B, M + T) or None -> hidden (B, T, d).
        Advances ``recurrence`` when one is given."""
        b, t = ids.shape
        past = recurrence.length if recurrence is not None else 0
        x = self.tok_emb(ids)
        if self.cfg.scale_embeddings:
            x = x * (self.cfg.d_model ** 0.5)
        x = self.drop(x)  # (B, T, d)
        mask, is_causal = decoder_mask(t, past + t, key_valid, ids.device)  # query i sees recurrence and keys <= i
        x = self.stack(x, mask=mask, is_causal=is_causal, cache=recurrence, bias=self.relative.scorer(past + t))
        if recurrence is not None:
            recurrence.advance()
        return x

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                recurrence: XLRecurrence | None = None) -> tuple[torch.Tensor, XLRecurrence | None]:
        """ids (B, L) -> hidden (B, L, d), run in segments of ``max_seq_len``.

        attention_mask: (B, M + L) bool/int, True = real token, covering the recurrence's M
        positions and these L (the convention of the KV cache). Without a ``recurrence``, an input
        longer than one segment gets a fresh one of ``mem_len``, so its segments see each other
        as in the paper; a single segment runs alone."""
        b, total = ids.shape
        seg = self.cfg.max_seq_len
        if recurrence is None and total > seg and self.cfg.mem_len > 0:
            recurrence = XLRecurrence(self.cfg.n_layer, self.cfg.mem_len)
        past = recurrence.length if recurrence is not None else 0
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            if attention_mask.shape != (b, past + total):
                raise ValueError(f"attention_mask must be (batch, recurrence + new) = {(b, past + total)}, "
                                 f"got {tuple(attention_mask.shape)}")
        hidden = []
        for start in range(0, total, seg):
            end = min(start + seg, total)
            key_valid = None
            if attention_mask is not None:  # this segment's keys: what the recurrence holds now, then its own
                held = recurrence.length if recurrence is not None else 0
                key_valid = attention_mask[:, past + start - held: past + end]
            hidden.append(self.segment(ids[:, start:end], key_valid, recurrence))
        return torch.cat(hidden, dim=1) if len(hidden) > 1 else hidden[0], recurrence


class TransformerXL(BackboneLM):
    """Transformer-XL language model: backbone + LM head (tied to the token embedding)."""

    backbone_class = TransformerXLBackbone

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                recurrence: XLRecurrence | None = None, last_only: bool = False, defer_head: bool = False) -> XLOutput:
        """ids (B, L); ``recurrence`` (from ``make_recurrence``) is read and advanced in place, and
        returned in the output, so ``out = model(seg, recurrence=mem)`` in a loop carries it on.
        ``defer_head``: no logits, the head is left to the loss (see ``CausalLM``)."""
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            hidden, recurrence = self.backbone(ids, attention_mask, recurrence)
        h = hidden[:, -1:] if last_only else hidden
        logits, head = head_or_deferred(self.lm_head, h, defer_head, head_weight)
        return XLOutput(logits, hidden, recurrence, head)

    def make_recurrence(self, batch: int | None = None, mem_len: int | None = None) -> XLRecurrence:
        """An empty recurrence of ``mem_len`` positions per layer (default: the config's). The
        batch size is set by the first segment; ``batch`` is accepted for symmetry with caches."""
        return XLRecurrence(self.cfg.n_layer, self.cfg.mem_len if mem_len is None else mem_len)

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> XLRecurrence:
        """The decoding protocol's name: a recurrence of ``max_len`` positions (default ``mem_len``), so
        that a generation of up to max_len tokens keeps every one of them and matches running the
        whole sequence at once. Its dtype follows the hidden states."""
        return self.make_recurrence(batch, max_len)
