"""Attention against a naive softmax(QK^T/sqrt(d) + mask)V written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import Attention, KVCache, RMSNorm, attention
from tfamily.nn.attention import explicit_attention, use_explicit
from tfamily.nn.masks import causal_mask


def naive(attn: Attention, x, mask=None, memory=None):
    b, t, _ = x.shape
    h, hk, d = attn.n_head, attn.n_kv_head, attn.head_dim
    if attn.cross:
        q = attn.q(x)
        k, v = attn.kv(memory).chunk(2, -1)
    else:
        q, k, v = attn.qkv(x).split([h * d, hk * d, hk * d], -1)
    s = k.shape[1]
    q = q.view(b, t, h, d).transpose(1, 2)
    k = k.view(b, s, hk, d).transpose(1, 2).repeat_interleave(h // hk, 1)
    v = v.view(b, s, hk, d).transpose(1, 2).repeat_interleave(h // hk, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.out(y.transpose(1, 2).reshape(b, t, h * d))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_self_attention_causal_matches_naive(kv_heads):
    attn = Attention(32, 4, kv_heads).eval()
    x = torch.randn(2, 7, 32)
    got = attn(x, is_causal=True)
    torch.testing.assert_close(got, naive(attn, x, causal_mask(7, 7)), atol=1e-5, rtol=1e-5)


def test_padding_mask_matches_naive():
    attn = Attention(32, 4, 4).eval()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    torch.testing.assert_close(attn(x, mask), naive(attn, x, mask), atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_naive():
    attn = Attention(32, 4, 4, cross=True).eval()
    x, memory = torch.randn(2, 3, 32), torch.randn(2, 6, 32)
    torch.testing.assert_close(attn(x, memory=memory), naive(attn, x, memory=memory), atol=1e-5, rtol=1e-5)


def test_cache_stores_only_kv_heads_and_appends():
    cache = KVCache(n_layer=2, batch=1, n_kv_head=2, max_len=8, head_dim=4)
    assert cache.k.shape == (2, 1, 2, 8, 4)
    attn = Attention(16, 4, 2).eval()
    x = torch.randn(1, 5, 16)
    full = attn(x, is_causal=True)
    first = attn(x[:, :3], mask=causal_mask(3, 3), cache=cache, layer=1)
    cache.advance(3)
    second = attn(x[:, 3:], mask=causal_mask(2, 5), cache=cache, layer=1)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-5, rtol=1e-5)


def test_cache_overflow_is_a_clear_error():
    cache = KVCache(1, 1, 1, 2, 4)
    with pytest.raises(ValueError, match="cache is full"):
        cache.update(0, torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    norm.weight.data.uniform_()
    x = torch.randn(3, 8)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), want)


@pytest.mark.parametrize("amx", [False, True])
def test_the_attention_formula_follows_the_cpu_measurements(monkeypatch, amx):
    """Without AMX, bf16 inference over few keys (and any single query) takes the explicit
    formula; with AMX, SDPA takes every pass without gradients; training keeps the explicit
    formula over few keys on both; fp32 always takes SDPA."""
    monkeypatch.setattr(attention, "AMX", amx)
    q, k = (torch.randn(2, 3, 16, 8, dtype=torch.bfloat16) for _ in range(2))
    one_query, many_keys = q[:, :, :1], torch.randn(2, 3, 1024, 8, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert use_explicit(q, k) is not amx
        assert use_explicit(one_query, many_keys) is not amx
        assert not use_explicit(q, torch.randn(2, 3, 256, 8, dtype=torch.bfloat16))
        assert not use_explicit(q.float(), k.float())
    q.requires_grad_()
    assert use_explicit(q, torch.randn(2, 3, 256, 8, dtype=torch.bfloat16))
    assert use_explicit(q, torch.randn(2, 3, 512, 8, dtype=torch.bfloat16)) is not amx
    assert not use_explicit(q, many_keys)


def test_explicit_attention_agrees_with_sdpa_in_bf16():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    with torch.inference_mode():
        got = explicit_attention(q, k, v, None, False, 0.0)
        want = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, atol=0.03, rtol=0.02)


@pytest.mark.parametrize("kind", ["causal", "bool", "float"])
def test_explicit_attention_gradients_match_the_tracked_formula(kind):
    """The mask is applied in place (a bool one untracked); q, k and v get the textbook gradients."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, dtype=torch.double, requires_grad=True) for _ in range(3))
    mask = None
    if kind == "bool":
        mask = torch.rand(2, 1, 6, 6) > 0.3
        mask |= torch.eye(6, dtype=torch.bool)  # no empty rows
    elif kind == "float":
        mask = torch.randn(1, 3, 6, 6, dtype=torch.double)
    y = explicit_attention(q, k, v, mask, kind == "causal", 0.0)
    refs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    scores = refs[0] @ refs[1].transpose(-1, -2) / 2.0
    if kind == "causal":
        scores = scores.masked_fill(~causal_mask(6, 6), float("-inf"))
    elif kind == "bool":
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask
    want = scores.softmax(-1) @ refs[2]
    g = torch.randn_like(y)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(y, want)
    for got, ref in zip((q, k, v), refs):
        torch.testing.assert_close(got.grad, ref.grad)


def test_cache_writes_after_reorder_land_in_the_reordered_storage():
    """``reorder`` replaces the storage; the per-layer views must follow it, or new keys would be
    written into the old tensors and never read."""
    cache = KVCache(n_layer=2, batch=2, n_kv_head=1, max_len=4, head_dim=3)
    first = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 1, 3)  # row 0 all 0, row 1 all 1
    cache.update(1, first, first + 10)
    cache.advance(1)
    cache.reorder(torch.tensor([1, 1]))  # both rows continue from row 1
    k, v = cache.update(1, torch.full((2, 1, 1, 3), 5.0), torch.full((2, 1, 1, 3), 7.0))
    assert k[:, 0, :, 0].tolist() == [[1.0, 5.0], [1.0, 5.0]]
    assert v[:, 0, :, 0].tolist() == [[11.0, 7.0], [11.0, 7.0]]
    assert cache.k[1, :, 0, 1, 0].tolist() == [5.0, 5.0]  # written into the cache's own storage
