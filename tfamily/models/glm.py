"""GLM (Du et al. 2022, "GLM: General Language Model Pretraining with Autoregressive Blank
Infilling"): one stack that reads Part A bidirectionally and writes Part B autoregressively.

    Part A: the text, each blank replaced by one [MASK]      x1 x2 [M] x4 [M]
    Part B: the blanks' spans, each started by [S]            [S] x5 x6 [S] x3

    ids (B, T), 2-D positions (B, 2, T) ─ token embedding + GLMPositions (two learned tables)
                                          ─ Stack of pre-LN Blocks under glm_mask: Part A sees
                                            Part A, Part B sees Part A and itself causally
                                          ─ hidden (B, T, d) ─ LM head (tied) ─ logits (B, T, V)

Nothing here is new machinery: the mask is ``nn.masks.glm_mask``, the positions are
``nn.positions.GLMPositions``, the blocks are the shared ``Stack``. The blank-infilling
objective that builds Part A and Part B is ``objectives.glm``; filling blanks at inference
is ``generation.infill``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..nn import KVCache, Stack, make_positions, positions_from_mask
from ..nn.loss import head_or_deferred, tied_table
from ..nn.positions import glm_part_a
from ..nn.masks import glm_mask
from .gpt import LMOutput, BackboneLM, check_inputs


class GLMBackbone(nn.Module):
    """Embeddings (token + 2-D positions) and the shared stack under the Part A / Part B mask."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = make_positions(cfg.position, cfg.max_seq_len, cfg.d_model)  # GLMPositions
        self.drop = nn.Dropout(cfg.dropout)
        self.stack = Stack(cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, part_a_len: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """ids: (B, T) -> hidden (B, T, d). See ``GLM.forward`` for the arguments."""
        b, t, past, attention_mask = check_inputs(self.cfg, ids, attention_mask, cache)
        if part_a_len is None:  # an empty cache: these tokens are Part A; else they continue Part B
            part_a_len = torch.full((b,), past if past else t, dtype=torch.long, device=ids.device)
        elif part_a_len.shape != (b,):
            raise ValueError(f"part_a_len must be (batch,) = ({b},), got {tuple(part_a_len.shape)}")
        if positions is None:
            if past or bool((part_a_len < t).any()):
                raise ValueError("positions (batch, 2, tokens) are needed for Part B tokens: each span's "
                                 "[MASK] position and the position inside the span")
            block = (positions_from_mask(attention_mask[:, -t:]) if attention_mask is not None
                     else torch.arange(t, device=ids.device).expand(b, t))  # (B, T): left padding does not shift them
            positions = glm_part_a(block)  # (B, 2, T)
        if positions.shape != (b, 2, t):
            raise ValueError(f"positions must be (batch, 2, tokens) = {(b, 2, t)}, got {tuple(positions.shape)}")
        if int(positions.max()) >= self.cfg.max_seq_len or int(positions.min()) < 0:
            raise ValueError(f"positions must lie in [0, max_seq_len={self.cfg.max_seq_len})")
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # (B, T, d)
        mask = glm_mask(part_a_len.to(ids.device), t, past + t, attention_mask)  # (B, 1, T, past + T)
        x = self.stack(x, mask=mask, cache=cache)
        if cache is not None:
            cache.advance(t)
        return x


class GLM(BackboneLM):
    """GLM backbone + LM head tied to the token embedding (``tie_embeddings``)."""

    backbone_class = GLMBackbone

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, part_a_len: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False, defer_head: bool = False) -> LMOutput:
        """ids: (B, T) the new tokens; attention_mask: (B, cached + T), True = real token;
        positions: (B, 2, T) position in Part A and inside the span; part_a_len: (B,) how many
        leading slots (cached ones included, left padding counted) are Part A.

        Defaults, for the two calls of generation: on an empty cache (or none) every token is
        Part A with positions 0, 1, ... (over real tokens); a call that continues a cache is
        Part B, and then ``positions`` must be given (which blank, how far into it).
        ``defer_head``: no logits, the head is left to the loss (see ``CausalLM``).
        """
        with tied_table(self.lm_head, self.backbone.tok_emb, defer_head) as head_weight:
            hidden = self.backbone(ids, attention_mask, positions, part_a_len, cache)
        h = hidden[:, -1:] if last_only else hidden
        logits, head = head_or_deferred(self.lm_head, h, defer_head, head_weight)
        return LMOutput(logits, hidden, cache, head)
