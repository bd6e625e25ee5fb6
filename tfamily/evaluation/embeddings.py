"""Sentence embeddings from any checkpoint, and a k-nearest-neighbour classifier over them.

An embedding is one vector per text: the backbone's final hidden states pooled (mean over
real tokens, the [CLS] token, BERT's pooler, or a decoder's last token) and, by default,
scaled to unit length so that a dot product is the cosine similarity.

kNN (the seeds explain it with the iris data) has no training step: the labelled
embeddings *are* the model; a new text takes the majority label of its k most similar.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data.inputs import encode_pieces, pad_rows
from ..heads import pool


def default_pooling(model: nn.Module) -> str:
    """What a checkpoint says (a sentence encoder's own choice, kept at import), else the mean
    of the tokens, which works for any family."""
    saved = model.cfg.extra.get("sentence_embedding", {}) if isinstance(model.cfg.extra, dict) else {}
    if isinstance(saved, dict) and saved.get("pooling") in ("mean", "first", "pooler", "last"):
        return saved["pooling"]
    return "mean"


def embed_texts(model: nn.Module, tokenizer, texts: Sequence[str], pooling: str | None = None,
                normalize: bool = True, batch_size: int = 64, max_len: int | None = None) -> torch.Tensor:
    """(N, d) fp32 embeddings of ``texts``, computed in batches of similar length."""
    return embed_ids(model, tokenizer, tokenizer.encode_batch(list(texts)), pooling, normalize, batch_size, max_len)


@torch.inference_mode()
def embed_ids(model: nn.Module, tokenizer, token_ids: Sequence[Sequence[int]], pooling: str | None = None,
              normalize: bool = True, batch_size: int = 64, max_len: int | None = None) -> torch.Tensor:
    """(N, d) embeddings of already tokenised texts (without specials: an encoder's [CLS] and
    [SEP] are added here, as it was trained)."""
    pooling = pooling or default_pooling(model)
    if pooling == "pooler" and getattr(model, "pooler", None) is None:
        raise ValueError("pooling='pooler' needs a model with BERT's pooler; use mean or first")
    max_len = min(max_len or model.cfg.max_seq_len, model.cfg.max_seq_len)
    device = next(model.parameters()).device
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    out = torch.empty(len(token_ids), model.cfg.d_model)
    with_types = tokenizer.special_ids.get("sep") is not None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_rows([encode_pieces(tokenizer, token_ids[i], None, max_len) for i in idx],
                         tokenizer.pad_id, with_types)
        kwargs = {"token_type_ids": batch.token_type_ids.to(device)} if model.cfg.type_vocab_size and with_types else {}
        hidden = _hidden(model, batch.ids.to(device), batch.attention_mask.to(device), kwargs)
        mask = batch.attention_mask.to(device)
        vec = model.pooler(hidden) if pooling == "pooler" else pool(hidden, mask, pooling)
        out[idx] = vec.float().cpu()
    return nn.functional.normalize(out, dim=-1) if normalize else out


def _hidden(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The final hidden states (B, T, d) of any family: its backbone's, so no head runs."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        return backbone(ids, mask, **kwargs).hidden
    return model.encode(ids, mask)  # an encoder-decoder: the encoder's states


def knn_predict(train: torch.Tensor, train_labels: Sequence[int], queries: torch.Tensor, k: int = 5,
                chunk: int = 1024) -> list[int]:
    """Majority label among each query's k most cosine-similar training embeddings (ties go to
    the label whose neighbours are more similar in total). Embeddings: (N, d), unit length."""
    if not 0 < k <= len(train):
        raise ValueError(f"k must be in 1..{len(train)} (the training set size), got {k}")
    labels = torch.as_tensor(list(train_labels))
    n_labels = int(labels.max()) + 1
    predictions = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ train.T  # (q, N)
        top = sims.topk(k, dim=-1)
        votes = torch.zeros(len(top.indices), n_labels)
        votes.scatter_add_(1, labels[top.indices], torch.ones_like(top.values))
        weight = torch.zeros_like(votes).scatter_add_(1, labels[top.indices], top.values)
        predictions += (votes + 1e-3 * weight).argmax(-1).tolist()  # votes first; similarity breaks ties
    return predictions
