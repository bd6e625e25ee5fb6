"""A recurrent language model (LSTM or GRU): the baseline the Transformer replaced.

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

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ModelConfig
from ..nn.loss import head_or_deferred, tied_table
from .gpt import BackboneLM, LMOutput


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


class RNNBackbone(nn.Module):
    """Token embedding and the stacked LSTM / GRU. Returns hidden states (B, T, d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = cfg.cell == "lstm"
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        rnn = nn.LSTM if self.lstm else nn.GRU
        self.rnn = rnn(cfg.d_model, cfg.d_model, cfg.n_layer, batch_first=True,
                       dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: RNNCache | None = None) -> torch.Tensor:
        """ids (B, T) -> hidden (B, T, d); zeros at padding. ``attention_mask`` (B, T) or (B, past
        + T), True = real token, left-padded; ``cache`` continues from (and is advanced to) the
        state after the tokens fed before."""
        b, t = ids.shape
        x = self.drop(self.tok_emb(ids))  # (B, T, d)
        state = cache.state(self.lstm) if cache is not None else None
        valid = attention_mask[:, -t:].bool() if attention_mask is not None else None
        if valid is None or bool(valid.all()):
            out, state = self.rnn(x, state)
        else:
            out, state = self._packed(x, valid, state)
        if cache is not None:
            cache.update(state, self.lstm, t)
        return self.drop(out)

    def _packed(self, x: torch.Tensor, valid: torch.Tensor, state):
        """Run only each row's real (right-aligned) tokens; rows with none keep their state."""
        b, t, _ = x.shape
        lengths = valid.sum(1)  # (B,)
        rows = (lengths > 0).nonzero().squeeze(1)
        front = left_to_right(x, lengths)[rows]  # (B', T, d), real tokens first
        part = None if state is None else (tuple(s[:, rows] for s in state) if self.lstm else state[:, rows])
        packed = pack_padded_sequence(front, lengths[rows].cpu(), batch_first=True, enforce_sorted=False)
        out_packed, new = self.rnn(packed, part)
        out_front, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=t)  # (B', T, d), zeros after
        out = x.new_zeros(b, t, out_front.shape[-1])
        out[rows] = left_to_right(out_front, lengths[rows], back=True)
        if state is None:
            shape = (self.cfg.n_layer, b, self.cfg.d_model)
            state = (x.new_zeros(shape), x.new_zeros(shape)) if self.lstm else x.new_zeros(shape)
        if self.lstm:
            state = tuple(s.index_copy(1, rows, n) for s, n in zip(state, new))
        else:
            state = state.index_copy(1, rows, new)
        return out, state


class RNNLM(BackboneLM):
    """The recurrent backbone + LM head (tied to the embedding when ``tie_embeddings``)."""

    backbone_class = RNNBackbone

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> RNNCache:
        """The recurrent state (its size does not depend on ``max_len``)."""
        return RNNCache()

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: RNNCache | None = None,
                last_only: bool = False, defer_head: bool = False) -> LMOutput:
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            hidden = self.backbone(ids, attention_mask, cache)
        h = hidden[:, -1:] if last_only else hidden
        logits, head = head_or_deferred(self.lm_head, h, defer_head, head_weight)
        return LMOutput(logits, hidden, cache, head)
