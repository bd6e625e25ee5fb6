"""Rotary position embedding: the formula, the relative-position property, and its use in attention."""

from __future__ import annotations

import math

import pytest
import torch

from tfamily.config import ConfigError, ModelConfig
from tfamily.models import build_model
from tfamily.nn import RotaryEmbedding, apply_rotary


def naive_rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as a complex multiplication, written out: pair i of a head is the complex number
    x[i] + j x[i + D/2], multiplied by exp(j p theta^(-2i/D)) at position p.
    x: (B, H, T, D); pos: (B, T)."""
    d = x.shape[-1]
    half = d // 2
    out = torch.empty_like(x, dtype=torch.float64)
    for i in range(half):
        angle = pos.double() * theta ** (-2 * i / d)  # (B, T)
        z = torch.complex(x[..., i].double(), x[..., i + half].double()) * torch.polar(
            torch.ones_like(angle), angle)[:, None]  # (B, H, T)
        out[..., i], out[..., i + half] = z.real, z.imag
    return out


@pytest.mark.parametrize("theta", [10000.0, 100.0])
def test_apply_rotary_matches_complex_formula(theta):
    torch.manual_seed(0)
    b, h, t, d = 2, 3, 7, 8
    x = torch.randn(b, h, t, d)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 30, 31]])
    cos, sin = RotaryEmbedding(d, theta)(pos)
    assert cos.shape == sin.shape == (b, t, d) and cos.dtype == torch.float32
    got = apply_rotary(x, cos, sin)
    torch.testing.assert_close(got.double(), naive_rope(x, pos, theta), atol=1e-5, rtol=0)


def test_position_zero_is_identity_and_norms_are_kept():
    x = torch.randn(1, 2, 5, 16)
    cos, sin = RotaryEmbedding(16)(torch.zeros(1, 5, dtype=torch.long))
    torch.testing.assert_close(apply_rotary(x, cos, sin), x, atol=0, rtol=0)
    cos, sin = RotaryEmbedding(16)(torch.arange(5)[None] * 100)
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_score_depends_only_on_relative_position():
    """q at position m and k at position n: q_m . k_n is the same for every (m, n) with the same m - n."""
    torch.manual_seed(1)
    d = 16
    rope = RotaryEmbedding(d, 10000.0)
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(m: int, n: int) -> float:
        qm = apply_rotary(q, *rope(torch.tensor([[m]])))
        kn = apply_rotary(k, *rope(torch.tensor([[n]])))
        return (qm * kn).sum().item()

    for delta in (0, 1, 5, -3):
        scores = [score(m, m - delta) for m in (3, 10, 57, 200)]
        assert max(scores) - min(scores) < 1e-4, (delta, scores)
    assert abs(score(10, 9) - score(10, 4)) > 1e-3  # and it does depend on the difference


def test_bf16_tables_keep_fp32_angles():
    """The module has no buffer for .to(bfloat16) to cast: angles at large positions stay exact."""
    rope = RotaryEmbedding(8, 10000.0).to(torch.bfloat16)
    cos, _ = rope(torch.tensor([[5000]]))
    assert cos.dtype == torch.float32
    torch.testing.assert_close(cos[0, 0, 0].double(), torch.tensor(math.cos(5000.0), dtype=torch.float64),
                               atol=1e-3, rtol=0)


def test_odd_head_size_is_refused():
    with pytest.raises(ConfigError, match="even head size"):
        ModelConfig(d_model=30, n_head=2, position="rotary")
    with pytest.raises(ConfigError, match="rope_theta"):
        ModelConfig(position="rotary", rope_theta=0.0)


def test_rotary_model_has_no_position_table_and_checkpointing_matches():
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=16,
                      position="rotary", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.backbone.pos_emb is None and not any("pos" in n for n, _ in model.named_parameters())
    ids = torch.randint(0, 50, (2, 9))
    model.train()
    want = model(ids).logits
    want.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.backbone.stack.checkpointing = True
    got = model(ids).logits
    got.sum().backward()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


def test_shifting_every_position_leaves_logits_unchanged():
    """With no absolute table, only differences of positions matter."""
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layer=2, n_head=4, max_seq_len=64, position="rotary",
                      norm="rmsnorm", bias=False)
    model = build_model(cfg).eval()
    ids = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        a = model(ids, positions=torch.arange(8)[None]).logits
        b = model(ids, positions=torch.arange(8)[None] + 20).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_frequencies_kept_between_calls_give_the_angles_made_afresh():
    """The fp32 frequencies a module keeps (not a buffer: model.to(bfloat16) leaves them alone)
    give the same tables as computing them again, at every position."""
    from tfamily.nn.positions import rotary_inv_freq

    rope = RotaryEmbedding(16, 500000.0)
    pos = torch.tensor([[0, 7, 31000]])
    first = rope(pos)
    rope = rope.to(torch.bfloat16)
    inv = rotary_inv_freq(16, 500000.0)
    angles = pos[..., None].float() * inv
    fresh = torch.cat([angles, angles], -1)
    for got in (first, rope(pos)):
        assert torch.equal(got[0], fresh.cos()) and torch.equal(got[1], fresh.sin())
