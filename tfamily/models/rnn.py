"""Recurrent models (LSTM or GRU), the baselines the Transformer replaced: a language model,
and an ELMo-style bidirectional LM whose states are contextual embeddings (below).

    ids (B, T) ─ token embedding ─ dropout
               ─ torch.nn.LSTM / GRU, n_layer layers of d_model units (fused kernels; no loop over
                 tokens in Python: the recurrence is inside the kernel)
               ─ dropout ─ hidden (B, T, d) ─ LM head (tied to the embedding) ─ logits (B, T, V)

There are no positions: the order of the tokens is the order of the recurrence. The cache is
the recurrent state after the tokens fed so far (``RNNCache``: h, and c for an LSTM), the same
size whatever the length, which is the whole difference from a Transformer's KV cache: it
is cheap, and it is all the model remembers.

Padding: a batch is left-padded (as every decoder's here). A pad fed through the recurrence
would change the state, so each row's real tokens are moved to the front, packed
(``pack_padded_sequence``: the kernel stops each row at its length), and moved back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ModelConfig
from ..nn import Linear
from ..nn.loss import DeferredHead, head_or_deferred, tied_table
from .gpt import BackboneLM, LMOutput
from .init import init_weights


class RNNCache:
    """The recurrent state of a batch: ``h`` (n_layer, B, d), and ``c`` likewise for an LSTM;
    None before the first token. ``length`` counts the tokens fed (for the protocol's checks)."""

    def __init__(self):
        self.h: torch.Tensor | None = None
        self.c: torch.Tensor | None = None
        self.length = 0

    def state(self, lstm: bool):
        if self.h is None:
            return None
        return (self.h, self.c) if lstm else self.h

    def update(self, state, lstm: bool, tokens: int) -> None:
        self.h, self.c = state if lstm else (state, None)
        self.length += tokens

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B',) in that order (beam search, finished rows leaving)."""
        if self.h is not None:
            self.h = self.h[:, index]
            self.c = self.c[:, index] if self.c is not None else None


def left_to_right(x: torch.Tensor, lengths: torch.Tensor, back: bool = False) -> torch.Tensor:
    """Move each row's last ``lengths[i]`` steps of x (B, T, ...) to its front (``back``: the
    reverse), a roll by T - length per row; the steps that wrap around are padding."""
    b, t = x.shape[:2]
    shift = (t - lengths)[:, None]  # (B, 1)
    steps = torch.arange(t, device=x.device)[None]  # (1, T)
    index = (steps - shift) % t if back else (steps + shift) % t  # (B, T)
    return x.gather(1, index.view(b, t, *([1] * (x.dim() - 2))).expand_as(x))


def reverse_real(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's last ``lengths[i]`` steps of x (B, T, ...) in place, padding left where
    it was: [p p a b c] -> [p p c b a]. Its own inverse."""
    b, t = x.shape[:2]
    start = (t - lengths)[:, None]  # (B, 1): first real step
    steps = torch.arange(t, device=x.device)[None]  # (1, T)
    index = torch.where(steps >= start, start + t - 1 - steps, steps)  # (B, T)
    return x.gather(1, index.view(b, t, *([1] * (x.dim() - 2))).expand_as(x))


def make_rnn(cfg: ModelConfig, size: int) -> nn.RNNBase:
    """n_layer stacked LSTM / GRU layers of ``size`` units over inputs of ``size``."""
    rnn = nn.LSTM if cfg.cell == "lstm" else nn.GRU
    return rnn(size, size, cfg.n_layer, batch_first=True, dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, valid: torch.Tensor | None, state):
    """x (B, T, n) through ``rnn`` from ``state`` -> (out (B, T, n), state after each row's last
    real token). ``valid`` (B, T) marks real tokens, left-padded; only they run (packed), their
    outputs land where they came from, padding gets zeros, and a row with none keeps its state."""
    if valid is None or bool(valid.all()):
        return rnn(x, state)
    lstm = isinstance(rnn, nn.LSTM)
    b, t, _ = x.shape
    lengths = valid.sum(1)  # (B,)
    rows = (lengths > 0).nonzero().squeeze(1)
    front = left_to_right(x, lengths)[rows]  # (B', T, n), real tokens first
    part = None if state is None else (tuple(s[:, rows] for s in state) if lstm else state[:, rows])
    packed = pack_padded_sequence(front, lengths[rows].cpu(), batch_first=True, enforce_sorted=False)
    out_packed, new = rnn(packed, part)
    out_front, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=t)  # (B', T, n), zeros after
    out = x.new_zeros(b, t, out_front.shape[-1])
    out[rows] = left_to_right(out_front, lengths[rows], back=True)
    if state is None:
        shape = (rnn.num_layers * (2 if rnn.bidirectional else 1), b, rnn.hidden_size)
        state = (x.new_zeros(shape), x.new_zeros(shape)) if lstm else x.new_zeros(shape)
    if lstm:
        return out, tuple(s.index_copy(1, rows, n) for s, n in zip(state, new))
    return out, state.index_copy(1, rows, new)


@dataclass
class RecurrentOutput:
    hidden: torch.Tensor  # (B, T, d_model)


class RNNBackbone(nn.Module):
    """Token embedding and the stacked LSTM / GRU. Returns hidden states (B, T, d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = cfg.cell == "lstm"
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = make_rnn(cfg, cfg.d_model)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: RNNCache | None = None) -> RecurrentOutput:
        """ids (B, T) -> hidden (B, T, d); zeros at padding. ``attention_mask`` (B, T) or (B, past
        + T), True = real token, left-padded; ``cache`` continues from (and is advanced to) the
        state after the tokens fed before."""
        t = ids.shape[1]
        x = self.drop(self.tok_emb(ids))  # (B, T, d)
        valid = attention_mask[:, -t:].bool() if attention_mask is not None else None
        out, state = run_rnn(self.rnn, x, valid, cache.state(self.lstm) if cache is not None else None)
        if cache is not None:
            cache.update(state, self.lstm, t)
        return RecurrentOutput(self.drop(out))


class RNNLM(BackboneLM):
    """The recurrent backbone + LM head (tied to the embedding when ``tie_embeddings``)."""

    backbone_class = RNNBackbone

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> RNNCache:
        """The recurrent state (its size does not depend on ``max_len``)."""
        return RNNCache()

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: RNNCache | None = None,
                last_only: bool = False, defer_head: bool = False) -> LMOutput:
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            hidden = self.backbone(ids, attention_mask, cache).hidden
        h = hidden[:, -1:] if last_only else hidden
        logits, head = head_or_deferred(self.lm_head, h, defer_head, head_weight)
        return LMOutput(logits, hidden, cache, head)


# ---- ELMo-style bidirectional language model ---------------------------------------------
#
#     ids (B, T) ─ token embedding (d/2) ─┬─ forward LSTM stack  ─ h→ (B, T, d/2) ─ head ─ next token
#                                          └─ backward LSTM stack ─ h← (B, T, d/2) ─ head ─ previous token
#     hidden = [h→ ; h←] (B, T, d): each position's representation has read the whole sentence,
#     left of it through h→, right of it through h←.
#
# Peters et al. 2018 (ELMo): two LMs, one each way, sharing the token representation and the
# softmax, trained together; their top states, concatenated, are the contextual embedding that
# fine-tuning and `embed` read. (ELMo feeds a learned mix of every layer and a character CNN;
# this is the top layer over word pieces.)

class BiRNNBackbone(nn.Module):
    """Shared token embedding (d/2), a forward and a backward LSTM / GRU stack of d/2 units."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        half = cfg.d_model // 2
        self.tok_emb = nn.Embedding(cfg.vocab_size, half)
        self.drop = nn.Dropout(cfg.dropout)
        self.forward_rnn = make_rnn(cfg, half)
        self.backward_rnn = make_rnn(cfg, half)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> RecurrentOutput:
        """ids (B, T), left- or un-padded -> hidden (B, T, d) = [forward ; backward], zeros at padding.
        (``token_type_ids`` is accepted for BERT-style pair inputs and not used: there are no segments.)"""
        x = self.drop(self.tok_emb(ids))  # (B, T, d/2)
        valid = attention_mask.bool() if attention_mask is not None else None
        lengths = valid.sum(1) if valid is not None else torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
        ahead, _ = run_rnn(self.forward_rnn, x, valid, None)
        back, _ = run_rnn(self.backward_rnn, reverse_real(x, lengths), valid, None)  # right to left
        return RecurrentOutput(self.drop(torch.cat([ahead, reverse_real(back, lengths)], -1)))  # (B, T, d)


@dataclass
class BiLMOutput:
    logits: torch.Tensor | None  # (B, T, V): the forward LM's next-token logits; None with defer_head
    hidden: torch.Tensor  # (B, T, d): [forward ; backward] states
    backward: LMOutput  # the backward LM's previous-token logits (or deferred head) on the same positions
    head: DeferredHead | None = None


class BiLM(nn.Module):
    """The bidirectional LM (pretraining): one head, tied to the embedding, read by both ways."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % 2:
            raise ValueError(f"a bidirectional RNN splits d_model between its two directions; {cfg.d_model} is odd")
        self.cfg = cfg
        self.backbone = BiRNNBackbone(cfg)
        self.lm_head = Linear(cfg.d_model // 2, cfg.vocab_size, bias=cfg.lm_head_bias)
        init_weights(self, cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.tok_emb.weight

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, defer_head: bool = False) -> BiLMOutput:
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            hidden = self.backbone(ids, attention_mask).hidden
        ahead, back = hidden.chunk(2, -1)  # (B, T, d/2) each
        logits, head = head_or_deferred(self.lm_head, ahead, defer_head, head_weight)
        back_logits, back_head = head_or_deferred(self.lm_head, back, defer_head, head_weight)
        return BiLMOutput(logits, hidden, LMOutput(back_logits, back, None, back_head), head)
