"""Attention masks as small pure functions.

Convention (that of ``F.scaled_dot_product_attention``): a boolean mask, True where a
query may attend to a key, broadcastable to (B, H, T_q, T_k).
"""

from __future__ import annotations

import torch


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """(T_q, T_k): query i (the last T_q of T_k positions) sees keys 0 .. (T_k - T_q + i)."""
    offset = t_k - t_q
    q = torch.arange(t_q, device=device)[:, None] + offset
    k = torch.arange(t_k, device=device)[None, :]
    return k <= q


def padding_mask(key_valid: torch.Tensor) -> torch.Tensor:
    """(B, T_k) bool, True = real token -> (B, 1, 1, T_k): nobody attends to padding."""
    return key_valid[:, None, None, :]


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """AND of the given masks (None = no constraint), broadcast together."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else (out & m)
    return out


def attend_to_self(mask: torch.Tensor, t_q: int, t_k: int) -> torch.Tensor:
    """Let every query see its own key, so that a padding query never has an all-False row.

    An all-masked row makes softmax return NaN, which would then leak into real tokens'
    gradients; the padding positions' outputs are ignored anyway.
    """
    q = torch.arange(t_q, device=mask.device)[:, None] + (t_k - t_q)
    diag = q == torch.arange(t_k, device=mask.device)[None, :]  # (T_q, T_k)
    return mask | diag


def decoder_mask(t_q: int, t_k: int, key_valid: torch.Tensor | None, device=None):
    """(mask, is_causal) for causal self-attention of T_q new queries over T_k keys (the
    cached ones first). Without padding, the fast ``is_causal`` path when T_q == T_k;
    with padding (B, T_k), causal AND padding, each query also seeing itself."""
    if key_valid is None:
        if t_q == t_k:
            return None, True
        return (causal_mask(t_q, t_k, device) if t_q > 1 else None), False
    if t_q == 1:  # a decoding step: the one query is the last position, so causality forbids nothing
        mask = padding_mask(key_valid).to(torch.bool, copy=True)  # (B, 1, 1, T_k): a copy, not the caller's
        mask[..., -1] = True  # and it sees itself
        return mask, False
    mask = combine(causal_mask(t_q, t_k, device)[None, None], padding_mask(key_valid))  # (B, 1, T_q, T_k)
    return attend_to_self(mask, t_q, t_k), False


def encoder_mask(key_valid: torch.Tensor | None) -> torch.Tensor | None:
    """Bidirectional self-attention over (B, T) tokens: everyone sees every real token.
    Padding queries also see themselves, so no softmax row is empty. No padding at all: None,
    so attention neither builds nor reads a (B, 1, T, T) mask that forbids nothing."""
    if key_valid is None or bool(key_valid.all()):
        return None
    t = key_valid.shape[-1]
    return attend_to_self(padding_mask(key_valid), t, t)  # (B, 1, T, T)


def glm_mask(part_a_len: torch.Tensor, t_q: int, t_k: int, key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """GLM's blank-infilling mask (Du et al. 2022, figure 2): Part A attends to all of Part A,
    Part B attends to Part A and causally to itself; padding is never attended to.

    part_a_len (B,): slots [0, part_a_len) of each row are Part A (left padding counts as slots);
    the T_q queries are the last T_q of T_k keys (the cached ones first); key_valid (B, T_k)
    True = real token. Returns (B, 1, T_q, T_k), each query also seeing itself.

        keys ->   A  A  A  B  B  B
        A         1  1  1  .  .  .
        A         1  1  1  .  .  .
        A         1  1  1  .  .  .
        B         1  1  1  1  .  .
        B         1  1  1  1  1  .
        B         1  1  1  1  1  1
    """
    q = torch.arange(t_q, device=part_a_len.device)[:, None] + (t_k - t_q)  # (T_q, 1) absolute slots
    k = torch.arange(t_k, device=part_a_len.device)[None, :]  # (1, T_k)
    in_a = k[None] < part_a_len[:, None, None]  # (B, 1, T_k): Part A keys, seen by everyone
    mask = (in_a | (k <= q)[None])[:, None]  # (B, 1, T_q, T_k): ... and causally within Part B
    if key_valid is not None:
        mask = mask & padding_mask(key_valid)
    return attend_to_self(mask, t_q, t_k)
