"""Transformer-XL relative attention: the shifted (efficient) computation equals the paper's
equation written out term by term, with and without memory; the memory is detached and
keeps the last mem_len states."""

import math

import pytest
import torch

from tfamily.nn import Attention
from tfamily.nn.cache import KVCache, XLRecurrence
from tfamily.nn.xl import XLRelativePositions, rel_shift, relative_sinusoid


def sinusoid_at(d: int, dim: int) -> torch.Tensor:
    """R_d straight from the definition: [sin(d f_0) .. sin(d f_{n-1}), cos(d f_0) .. cos(d f_{n-1})]."""
    f = [10000.0 ** (-2 * i / dim) for i in range(dim // 2)]
    return torch.tensor([math.sin(d * x) for x in f] + [math.cos(d * x) for x in f])


def naive_xl_attention(attn: Attention, rel: XLRelativePositions, layer: int, x: torch.Tensor,
                       mem: torch.Tensor | None) -> torch.Tensor:
    """Dai et al. 2019, section 3.3, one (query, key) pair at a time:
    A_ij = q_i.k_j + q_i.W_R R_{i-j} + u.k_j + v.W_R R_{i-j}, causal over [memory; x]."""
    b, t, d = x.shape
    h, hd = attn.n_head, attn.head_dim
    ctx = x if mem is None else torch.cat([mem, x], 1)  # (B, S, d)
    s, m = ctx.shape[1], ctx.shape[1] - t
    w_q, w_k, w_v = attn.qkv.weight.split(h * hd)
    b_q, b_k, b_v = attn.qkv.bias.split(h * hd)
    q = (x @ w_q.T + b_q).view(b, t, h, hd)
    k = (ctx @ w_k.T + b_k).view(b, s, h, hd)
    v = (ctx @ w_v.T + b_v).view(b, s, h, hd)
    u, vb, w_r = rel.u[layer], rel.v[layer], rel.r_proj[layer].weight
    out = torch.zeros(b, t, h, hd)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                scores = torch.full((s,), float("-inf"))
                for j in range(i + m + 1):  # query i sits at position m + i of [memory; x]
                    r = (w_r @ sinusoid_at(m + i - j, d)).view(h, hd)[hi]  # W_R R_{i-j}
                    a = q[bi, i, hi] @ k[bi, j, hi]
                    bterm = q[bi, i, hi] @ r
                    c = u[hi] @ k[bi, j, hi]
                    dterm = vb[hi] @ r
                    scores[j] = (a + bterm + c + dterm) / math.sqrt(hd)
                out[bi, i, hi] = scores.softmax(-1) @ v[bi, :, hi]
    return attn.out(out.reshape(b, t, h * hd))


@pytest.fixture
def parts():
    torch.manual_seed(0)
    d, h = 16, 2
    attn = Attention(d, h, h)
    rel = XLRelativePositions(n_layer=2, d_model=d, n_head=h, head_dim=d // h)
    with torch.no_grad():  # make the position terms matter as much as the content terms
        rel.u.normal_(0, 1.0)
        rel.v.normal_(0, 1.0)
        for p in rel.r_proj:
            p.weight.normal_(0, 0.5)
    return attn, rel


def efficient(attn, rel, layer, x, mem):
    memory = XLRecurrence(n_layer=2, mem_len=16)
    if mem is not None:
        memory.states[layer] = mem
        memory.states[1 - layer] = mem
    s = x.shape[1] + memory.length
    return attn(x, is_causal=True, cache=memory, layer=layer, bias=rel.scorer(s))


@pytest.mark.parametrize("mem_len", [0, 3, 7])
def test_shifted_attention_equals_the_papers_equation(parts, mem_len):
    attn, rel = parts
    x = torch.randn(2, 5, 16)
    mem = torch.randn(2, mem_len, 16) if mem_len else None
    with torch.no_grad():
        want = naive_xl_attention(attn, rel, 1, x, mem)
        got = efficient(attn, rel, 1, x, mem)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_position_terms_matter(parts):
    """Guard against a vacuous pass: dropping (b) + (d) changes the output."""
    attn, rel = parts
    x, mem = torch.randn(1, 4, 16), torch.randn(1, 3, 16)
    with torch.no_grad():
        with_positions = efficient(attn, rel, 0, x, mem)
        memory = XLRecurrence(2, 16)
        memory.states = [mem, mem]
        plain = attn(x, is_causal=True, cache=memory, layer=0)
    assert (with_positions - plain).abs().max() > 1e-2


def test_rel_shift_puts_distance_i_minus_j_in_column_j():
    t, m = 4, 3
    s = t + m
    by_distance = torch.arange(s - 1, -1, -1.0).expand(1, 1, t, s)  # column c holds distance S-1-c
    shifted = rel_shift(by_distance.clone())[0, 0]
    for i in range(t):
        for j in range(i + m + 1):
            assert shifted[i, j] == m + i - j


def test_relative_sinusoid_is_descending_sin_then_cos():
    r = relative_sinusoid(6, 8)
    for row, d in enumerate(range(5, -1, -1)):
        torch.testing.assert_close(r[row], sinusoid_at(d, 8), rtol=0, atol=1e-6)


def test_memory_is_detached_and_keeps_the_last_mem_len():
    memory = XLRecurrence(n_layer=1, mem_len=5)
    a = torch.randn(1, 3, 4, requires_grad=True)
    assert memory.extend(0, a) is a and memory.length == 0
    memory.advance()
    b = torch.randn(1, 4, 4, requires_grad=True)
    joined = memory.extend(0, b)  # (1, 3 + 4, 4)
    assert joined.shape == (1, 7, 4)
    joined.sum().backward()
    assert a.grad is None and b.grad is not None  # no gradient into the previous segment
    memory.advance()
    assert memory.length == 5
    torch.testing.assert_close(memory.states[0], torch.cat([a, b], 1)[:, -5:].detach())
    assert not memory.states[0].requires_grad


def test_memory_needs_every_layer_before_it_advances():
    memory = XLRecurrence(n_layer=2, mem_len=4)
    memory.extend(0, torch.zeros(1, 2, 4))
    with pytest.raises(RuntimeError, match="every layer"):
        memory.advance()


def test_kv_cache_is_not_a_hidden_state_memory():
    assert not KVCache(1, 1, 1, 4, 2).keeps_hidden_states and XLRecurrence(1, 4).keeps_hidden_states
