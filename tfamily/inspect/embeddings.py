"""Sentence embeddings of labelled texts, laid out in two dimensions (for `tfamily viz embeddings`).

    texts ──embed_texts──▶ (N, d) unit vectors ──project──▶ (N, 2) points, one colour per label

The vectors are those `tfamily embed` writes (``evaluation.embeddings.embed_texts``: the
checkpoint's own pooling, else the mean of the tokens; unit length), so the picture shows what
kNN and the embeddings endpoint see. Two projections:

    pca    the two directions of largest variance (an exact SVD of the centred vectors): linear,
           deterministic, distances along the axes mean something; the notes give the share of
           the variance each axis holds
    tsne   t-SNE (scikit-learn): keeps each text's nearest neighbours near, so clusters show
           even when they are not linearly apart; distances between clusters mean little
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

METHODS = ("pca", "tsne")


@dataclass
class EmbeddingMap:
    title: str
    method: str  # "pca" or "tsne"
    points: torch.Tensor  # (N, 2) float32
    labels: list[str]
    texts: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def label_names(self) -> list[str]:
        """The distinct labels, sorted (the colours' order)."""
        return sorted(set(self.labels))


def sample(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """Indices of at most ``limit`` of ``n`` items: all of them, or a seeded random choice kept in
    file order (a file sorted by label still gives every label its share)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
    return sorted(chosen.tolist())


def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, 2) coordinates on the two principal axes of ``vectors`` (N, d), and the share of the
    variance each holds. Each axis is signed so that its largest loading is positive (the same
    picture on every run)."""
    x = vectors.double() - vectors.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (k, d), k = min(N, d)
    axes = vh[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * torch.where(signs == 0, 1.0, signs)
    points = x @ axes.T  # (N, <= 2)
    if points.shape[1] < 2:  # fewer than two axes (two texts, or d = 1): the second coordinate is 0
        points = torch.cat([points, torch.zeros(len(x), 2 - points.shape[1], dtype=points.dtype)], 1)
    total = float((s ** 2).sum())
    shares = [float(v) / total if total > 0 else 0.0 for v in (s[:2] ** 2)]
    return points.float(), shares + [0.0] * (2 - len(shares))


def tsne_2d(vectors: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(N, 2) t-SNE coordinates (scikit-learn, PCA start, cosine distances) and the perplexity used
    (30, or less for few texts: it must stay below their number)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ValueError("t-SNE needs scikit-learn (pip install scikit-learn); the pca method needs nothing") from None
    n = len(vectors)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 texts; there are {n} (use pca)")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed
                  ).fit_transform(vectors.double().numpy())
    return torch.as_tensor(points, dtype=torch.float32), perplexity


def embedding_map(model: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[str], method: str = "pca",
                  pooling: str | None = None, title: str = "", seed: int = 0,
                  batch_size: int = 64) -> EmbeddingMap:
    """``texts`` embedded as `tfamily embed` embeds them and projected to 2-D by ``method``."""
    from ..evaluation.embeddings import default_pooling, embed_texts
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) < 2:
        raise ValueError(f"a map needs at least 2 texts; there are {len(texts)}")
    model.eval()
    vectors = embed_texts(model, tokenizer, list(texts), pooling=pooling, batch_size=batch_size)  # (N, d), unit length
    notes = [f"{len(texts)} texts, {len(set(labels))} labels; {vectors.shape[1]}-dimensional unit vectors pooled "
             f"by {pooling or default_pooling(model)} (as `tfamily embed`)"]
    if method == "pca":
        points, shares = pca_2d(vectors)
        notes.append(f"PCA: axis 1 holds {shares[0]:.1%} of the variance, axis 2 {shares[1]:.1%}")
    else:
        points, perplexity = tsne_2d(vectors, seed)
        notes.append(f"t-SNE (perplexity {perplexity:g}, seed {seed}): neighbours stay near; distances between "
                     "clusters mean little")
    return EmbeddingMap(title, method, points, list(labels), list(texts), notes)
