"""A decoding step's self-attention in one native call (nn.native.attend_step, attention.c): the
cache written with exactly the keys and values the eager path writes, the output within bf16's
rounding of a float64 softmax, and taken by Attention only where it computes the same thing."""

import platform
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from tfamily.models import build_model
from tfamily.nn import native
from tfamily.nn.attention import Attention
from tfamily.nn.cache import KVCache
from tfamily.nn.positions import turn_heads
from tfamily.presets import get_preset

needs_kernel = pytest.mark.skipif(not native.attend_step_available(),
                                  reason="no AVX-512 BF16 (or no C compiler) here: decoding uses torch's attention")
on_x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the plain-C build is made for x86-64")


def step_case(b, h, h_kv, d, pos, masked, seed=0):
    """The new token's q|k|v (B, 1, H + 2 H_kv, D), rotary tables, a cache window (a strided
    view, as generation's slot storage hands the model), and a key mask with padding."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, 1, h + 2 * h_kv, d, generator=g).bfloat16()
    storage = torch.randn(2, 2, b + 1, h_kv, pos + 40, d, generator=g).bfloat16()
    k_slots, v_slots = storage[0, 1, :b, :, 13:], storage[1, 1, :b, :, 13:]  # (B, H_kv, slots, D), strided
    angles = torch.rand(b, 1, 1, d, generator=g) * 6
    half = d // 2
    cos, sin = angles.cos().bfloat16(), angles.sin()
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], -1).bfloat16()
    mask = None
    if masked:
        mask = torch.rand(b, 1, 1, pos + 1, generator=g) > 0.3
        mask[0, ..., :min(pos, 100)] = False  # left padding longer than a chunk of keys
        mask[..., -1] = True  # the new token sees itself
    return qkv, (cos, signed_sin), k_slots, v_slots, mask


def eager_step(qkv, rotary, k_slots, v_slots, pos, h, h_kv, mask):
    """What Attention's eager path computes: turned q and k, the cache written, then float64 attention."""
    qk = turn_heads(qkv[:, :, :h + h_kv], *rotary)
    q, k, v = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2), qkv[:, :, h + h_kv:].transpose(1, 2)
    k_slots[:, :, pos:pos + 1], v_slots[:, :, pos:pos + 1] = k, v
    y = F.scaled_dot_product_attention(q.double(), k_slots[:, :, :pos + 1].double(), v_slots[:, :, :pos + 1].double(),
                                       attn_mask=mask, enable_gqa=h != h_kv)
    return y.transpose(1, 2).reshape(qkv.shape[0], 1, -1)


CASES = [  # (B, H, H_kv, D, cached positions, key mask)
    (1, 4, 2, 32, 0, False),  # the first token: one key
    (1, 14, 2, 64, 70, False),  # Qwen2.5-0.5B's heads
    (2, 9, 3, 64, 150, True),  # SmolLM2's, padded rows, keys over three chunks
    (1, 8, 8, 128, 33, True),  # no grouping, D = 128
    (3, 6, 2, 80, 9, True),  # D not a multiple of 32: the plain loop inside the vectorised build
    (2, 8, 2, 64, 2100, True),  # enough keys that the heads are shared among threads
]


@needs_kernel
@pytest.mark.parametrize("b,h,h_kv,d,pos,masked", CASES)
def test_attend_step_writes_the_eager_cache_and_attends_within_bf16_rounding(b, h, h_kv, d, pos, masked):
    qkv, rotary, k_slots, v_slots, mask = step_case(b, h, h_kv, d, pos, masked)
    k_eager, v_eager = k_slots.clone(), v_slots.clone()
    exact = eager_step(qkv, rotary, k_eager, v_eager, pos, h, h_kv, mask)
    y = native.attend_step(qkv, rotary, k_slots, v_slots, pos, h_kv, mask)
    assert y.shape == (b, 1, h * d) and y.dtype == torch.bfloat16
    assert torch.equal(k_slots, k_eager) and torch.equal(v_slots, v_eager)  # every slot: the new one and the rest
    # fp32 sums rounded once to bf16 (half a step of 2^-8, relative), and the bf16 products of q.k
    torch.testing.assert_close(y.double(), exact, rtol=2 ** -8, atol=2e-3)


@needs_kernel
def test_without_rotary_the_token_is_written_as_projected():
    qkv, _, k_slots, v_slots, _ = step_case(1, 4, 2, 64, 5, False)
    y = native.attend_step(qkv, None, k_slots, v_slots, 5, 2, scale=0.5)
    assert torch.equal(k_slots[:, :, 5], qkv[:, 0, 4:6]) and torch.equal(v_slots[:, :, 5], qkv[:, 0, 6:8])
    q, k, v = qkv[:, :, :4].transpose(1, 2), k_slots[:, :, :6], v_slots[:, :, :6]
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), enable_gqa=True, scale=0.5)
    torch.testing.assert_close(y.double(), exact.transpose(1, 2).reshape(1, 1, -1), rtol=2 ** -8, atol=2e-3)


@on_x86
def test_the_plain_c_build_attends_the_same(tmp_path, monkeypatch):
    """Built for any x86-64 (no AVX-512 BF16), the same file takes its plain-C loops, which
    tfamily does not choose (attend_step_available) but which must be right all the same."""
    monkeypatch.setenv("TFAMILY_CACHE", str(tmp_path))
    native.library.cache_clear()
    native._attend_step.cache_clear()
    try:
        if native._attend_step("x86-64") is None:
            pytest.skip("no C compiler with OpenMP here")
        assert not native.attend_simd("x86-64")
        qkv, rotary, k_slots, v_slots, mask = step_case(2, 9, 3, 64, 150, True)
        k_eager, v_eager = k_slots.clone(), v_slots.clone()
        exact = eager_step(qkv, rotary, k_eager, v_eager, 150, 9, 3, mask)
        y = native.attend_step(qkv, rotary, k_slots, v_slots, 150, 3, mask, march="x86-64")
        assert torch.equal(k_slots, k_eager) and torch.equal(v_slots, v_eager)
        torch.testing.assert_close(y.double(), exact, rtol=2 ** -8, atol=2e-3)
    finally:
        native.library.cache_clear()
        native._attend_step.cache_clear()


# ---- Attention takes it for decoding steps only ------------------------------------------------

def tiny_llama():
    torch.manual_seed(0)
    cfg = get_preset("llama-tiny").config()
    return cfg, build_model(cfg).eval().to(torch.bfloat16)


def teacher_forced_logits(model, cfg, prompt, forced, attention_mask=None, native_on=True):
    """Prefill ``prompt`` (B, P), then one forced token a step; the logits of every step."""
    b = prompt.shape[0]
    with torch.no_grad(), mock.patch.object(native, "attend_step_available", lambda: native_on):
        cache = KVCache(cfg.n_layer, b, cfg.n_kv_head, 64, cfg.head_dim, torch.bfloat16)
        mask = attention_mask
        logits = [model(prompt, attention_mask=mask, cache=cache).logits[:, -1]]
        for i in range(forced.shape[1]):
            if mask is not None:
                mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype)], 1)
            logits.append(model(forced[:, i:i + 1], attention_mask=mask, cache=cache).logits[:, -1])
    return torch.stack(logits, 1).float()


@needs_kernel
@pytest.mark.parametrize("padded", [False, True])
def test_decoding_steps_give_the_eager_logits(padded):
    cfg, model = tiny_llama()
    prompt = torch.randint(0, cfg.vocab_size, (2, 7))
    forced = torch.randint(0, cfg.vocab_size, (2, 12))
    attention_mask = None
    if padded:  # the second row has 3 tokens of left padding
        attention_mask = torch.ones(2, 7, dtype=torch.long)
        attention_mask[1, :3] = 0
    calls = []
    step = native.attend_step
    with mock.patch.object(native, "attend_step", lambda *a, **kw: calls.append(1) or step(*a, **kw)):
        fast = teacher_forced_logits(model, cfg, prompt, forced, attention_mask)
    assert len(calls) == 12 * cfg.n_layer  # every decoding step of every layer, no prefill
    eager = teacher_forced_logits(model, cfg, prompt, forced, attention_mask, native_on=False)
    torch.testing.assert_close(fast, eager, rtol=0, atol=0.03 * eager.abs().max().item())


def test_attention_keeps_the_eager_path_where_the_native_step_does_not_apply():
    """Gradients, fp32, an attention capture's probe, several new tokens, a full (T, S) mask,
    cross-attention: the native step is not taken (it computes none of those)."""
    attn = Attention(64, 4, 2, bias=False, head_dim=16).eval().to(torch.bfloat16)
    cross = Attention(64, 4, 2, bias=False, head_dim=16, cross=True).eval().to(torch.bfloat16)
    x = torch.randn(1, 1, 64).bfloat16()
    cache = KVCache(1, 1, 2, 8, 16, torch.bfloat16)
    cache.length = 3
    with mock.patch.object(native, "attend_step_available", lambda: True):
        with torch.no_grad():
            assert attn._native_step(x, None, cache, None, None)
            assert attn._native_step(x, torch.ones(1, 1, 1, 4, dtype=torch.bool), cache, None, None)
            assert not attn._native_step(torch.randn(1, 2, 64).bfloat16(), None, cache, None, None)
            assert not attn._native_step(x.float(), None, cache, None, None)
            assert not attn._native_step(x, torch.ones(1, 4, 1, 4, dtype=torch.bool), cache, None, None)
            assert not attn._native_step(x, None, None, None, None)
            assert not attn._native_step(x, None, cache, torch.zeros(1, 4, 1, 4), None)
            assert not cross._native_step(x, None, cache, None, None)
            attn.probe = lambda *a: None
            assert not attn._native_step(x, None, cache, None, None)
            attn.probe = None
        assert not attn._native_step(x, None, cache, None, None)  # gradients on
