"""An RNN encoder-decoder with additive attention: neural machine translation before the
Transformer (Bahdanau, Cho & Bengio 2015, "RNNsearch").

    src (B, S) ─ embedding ─ bidirectional LSTM / GRU (d/2 each way) ─ memory (B, S, d): one
                                                                         annotation per source token
    tgt (B, T) ─ embedding ─ LSTM / GRU (d), its first state from the mean annotation
               ─ s_i (B, T, d) ─ additive attention over the memory:
                     e_ij = v · tanh(W s_i + U h_j)      (masked where the source is padding)
                     a_ij = softmax_j(e_ij),  c_i = sum_j a_ij h_j
               ─ tanh(W_o [s_i ; c_i]) ─ LM head (tied to the embedding) ─ logits (B, T, V)

The score is Bahdanau's additive one; its query is the decoder's state after reading y_<=i
(Luong et al. 2015 place it there too). Bahdanau et al. feed the context c_{i-1} into the
recurrence instead, which forces a Python loop over target steps; here the whole target
runs through one fused LSTM / GRU call in training, as the encoder does.

It speaks the encoder-decoder protocol of ``seq2seq.EncoderDecoder`` (``encode``, then
``forward(..., memory=, cache=)``), so translation, beam search, the server and the
sequence-to-sequence objectives need nothing of their own. Its cache is the decoder's
recurrent state plus the attention's projected keys, computed once per source.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..nn import Linear
from ..nn.loss import head_or_deferred, tied_table
from .init import init_weights
from .rnn import RNNCache, left_to_right, make_rnn, run_rnn
from .seq2seq import Seq2SeqOutput


class AttentionRNNCache(RNNCache):
    """The decoder's recurrent state and the attention's keys ``U h_j`` (B, S, d), projected once."""

    def __init__(self):
        super().__init__()
        self.keys: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> None:
        super().reorder(index)
        if self.keys is not None:
            self.keys = self.keys[index]


class AdditiveAttention(nn.Module):
    """e_ij = v · tanh(W s_i + U h_j): a one-hidden-layer network scores each (query, key) pair."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = Linear(dim, dim, bias=False)  # W
        self.key = Linear(dim, dim, bias=True)  # U (and the hidden layer's bias)
        self.score = Linear(dim, 1, bias=False)  # v

    def forward(self, states: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                src_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, T, d), keys = U memory (B, S, d), memory (B, S, d), src_mask (B, S) ->
        (context (B, T, d), weights (B, T, S))."""
        energy = self.score(torch.tanh(self.query(states)[:, :, None] + keys[:, None])).squeeze(-1)  # (B, T, S)
        if src_mask is not None:
            energy = energy.masked_fill(~src_mask.bool()[:, None], float("-inf"))
        weights = energy.softmax(-1)
        return weights @ memory, weights  # (B, T, d)


class RNNSeq2Seq(nn.Module):
    """Bidirectional recurrent encoder, attentive recurrent decoder, tied LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % 2:
            raise ValueError(f"the bidirectional encoder splits d_model between its two directions; {cfg.d_model} is odd")
        self.cfg = cfg
        d = cfg.d_model
        self.lstm = cfg.cell == "lstm"
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)  # one table for source and target (a joint vocabulary)
        self.drop = nn.Dropout(cfg.dropout)
        encoder = nn.LSTM if self.lstm else nn.GRU
        self.encoder = encoder(d, d // 2, cfg.encoder_layers, batch_first=True, bidirectional=True,
                               dropout=cfg.dropout if cfg.encoder_layers > 1 else 0.0)
        self.init_state = Linear(d, cfg.n_layer * d)  # s_0 = tanh(W mean_j h_j), one per decoder layer
        self.decoder = make_rnn(cfg, d)
        self.attention = AdditiveAttention(d)
        self.combine = Linear(2 * d, d)  # tanh(W_o [s_i ; c_i])
        self.lm_head = Linear(d, cfg.vocab_size, bias=cfg.lm_head_bias)
        init_weights(self, cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def make_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> AttentionRNNCache:
        return AttentionRNNCache()

    # ---- the two halves -----------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids (B, S), src_mask (B, S) True = real token (left-padded or right-padded) -> memory (B, S, d),
        zeros at padding."""
        x = self.drop(self.tok_emb(src_ids))
        valid = src_mask.bool() if src_mask is not None else None
        if valid is not None and not bool(valid.all()) and bool(valid[:, -1].all()):
            memory, _ = run_rnn(self.encoder, x, valid, None)  # left padding: packed, in place
        else:
            memory, _ = run_rnn(self.encoder, x, None, None) if valid is None else self._right_padded(x, valid)
        return self.drop(memory)

    def _right_padded(self, x: torch.Tensor, valid: torch.Tensor):
        """Right-padded sources (training batches): move each row's tokens to the end (left
        padding), run, and move the annotations back."""
        lengths = valid.sum(1)
        to_left = lambda t: left_to_right(t, lengths, back=True)  # noqa: E731
        memory, state = run_rnn(self.encoder, to_left(x), to_left(valid), None)
        return left_to_right(memory, lengths), state

    def first_state(self, memory: torch.Tensor, src_mask: torch.Tensor | None):
        """The decoder's initial state from the mean annotation over real source tokens."""
        if src_mask is None:
            mean = memory.mean(1)
        else:
            m = src_mask.to(memory.dtype)[..., None]  # (B, S, 1)
            mean = (memory * m).sum(1) / m.sum(1).clamp(min=1)
        b, d = mean.shape
        h = torch.tanh(self.init_state(mean)).view(b, self.cfg.n_layer, d).transpose(0, 1).contiguous()
        return (h, torch.zeros_like(h)) if self.lstm else h

    def forward(self, src_ids: torch.Tensor | None, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                cache: AttentionRNNCache | None = None, last_only: bool = False,
                defer_head: bool = False) -> Seq2SeqOutput:
        """Teacher-forced logits (B, T, V) for target inputs ``tgt_ids`` given the source (or its
        ``memory``); with a ``cache``, ``tgt_ids`` continue the targets fed before."""
        with tied_table(self.lm_head, self.tok_emb, defer_head) as head_weight:
            if memory is None:
                memory = self.encode(src_ids, src_mask)
            state = cache.state(self.lstm) if cache is not None and cache.length else self.first_state(memory, src_mask)
            keys = cache.keys if cache is not None and cache.keys is not None else self.attention.key(memory)
            x = self.drop(self.tok_emb(tgt_ids))  # (B, T, d)
            valid = tgt_mask[:, -tgt_ids.shape[1]:].bool() if tgt_mask is not None else None
            states, state = run_rnn(self.decoder, x, valid, state)  # (B, T, d)
            context, _ = self.attention(states, keys, memory, src_mask)
            h = self.drop(torch.tanh(self.combine(torch.cat([states, context], -1))))  # (B, T, d)
        if cache is not None:
            cache.update(state, self.lstm, tgt_ids.shape[1])
            cache.keys = keys
        out = h[:, -1:] if last_only else h
        logits, head = head_or_deferred(self.lm_head, out, defer_head, head_weight)
        return Seq2SeqOutput(logits, h, memory, cache, head)
