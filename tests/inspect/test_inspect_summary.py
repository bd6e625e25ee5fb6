"""Parameter, FLOPs and memory breakdowns, checked against hand computations."""

from __future__ import annotations

import pytest
from torch import nn

from tfamily.config import ModelConfig
from tfamily.inspect import (activation_bytes_per_layer, flops_per_token, format_report, human_bytes,
                             human_count, human_flops, matmul_params, memory_estimate, param_breakdown)
from tfamily.models import build_model
from tfamily.presets import get_preset

SMALL = dict(vocab_size=50, d_model=32, n_layer=2, n_head=4, max_seq_len=16)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def gpt2_small():
    return build_model(get_preset("gpt2-small").config())


# ---- parameters ------------------------------------------------------------------------

def test_gpt_tiny_groups_by_hand():
    model = build_model(get_preset("gpt-tiny").config())
    d, layers, vocab, ctx, ff = 128, 4, 512, 256, 512
    got = param_breakdown(model)
    assert got["embeddings"] == vocab * d + ctx * d
    assert got["attention"] == layers * (d * 3 * d + 3 * d + d * d + d)
    assert got["feed_forward"] == layers * (d * ff + ff + ff * d + d)
    assert got["norms"] == layers * 2 * 2 * d + 2 * d
    assert got["head"] == 0 and got["other"] == 0
    assert got["total"] == n_params(model)


def test_gpt2_small_total(gpt2_small):
    got = param_breakdown(gpt2_small)
    assert got["total"] == n_params(gpt2_small) == 124_439_808
    assert got["embeddings"] == 50257 * 768 + 1024 * 768
    assert got["head"] == 0  # tied: it is the embedding
    assert got["non_embedding"] == 124_439_808 - got["embeddings"]
    assert got["ffn_share"] == pytest.approx(got["feed_forward"] / got["non_embedding"])
    assert 0.6 < got["ffn_share"] < 0.7  # 2 * 4d^2 of every 12d^2 block weights, plus biases


def test_untied_head_is_counted_once():
    tied = build_model(ModelConfig(**SMALL))
    untied = build_model(ModelConfig(**SMALL, tie_embeddings=False))
    t, u = param_breakdown(tied), param_breakdown(untied)
    assert u["head"] == 50 * 32 and t["head"] == 0
    assert u["total"] - t["total"] == 50 * 32
    assert u["total"] == n_params(untied) and t["total"] == n_params(tied)
    assert u["non_embedding"] == t["non_embedding"]


def test_rmsnorm_gated_gqa_model_is_classified_by_type():
    model = build_model(ModelConfig(**SMALL, n_kv_head=2, norm="rmsnorm", gated_mlp=True, bias=False,
                                    activation="silu", position="none"))
    got = param_breakdown(model)
    assert got["norms"] == (2 * 2 + 1) * 32  # RMSNorm: a gain only
    assert got["embeddings"] == 50 * 32  # no position table
    assert got["feed_forward"] == 2 * 3 * 32 * 128
    assert got["total"] == n_params(model)


def test_model_without_backbone_puts_unknown_modules_in_other():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    got = param_breakdown(model)
    assert (got["embeddings"], got["norms"], got["other"], got["head"]) == (40, 8, 15, 0)
    assert got["total"] == n_params(model)


# ---- FLOPs -----------------------------------------------------------------------------

def test_flops_by_hand():
    cfg = ModelConfig(**SMALL)  # d 32, d_ff 128, 2 layers, vocab 50
    per_layer = (32 * 96 + 32 * 32) + (32 * 128 + 128 * 32)  # qkv + out, fc_in + fc_out
    assert matmul_params(cfg) == 2 * per_layer == 24_576
    got = flops_per_token(cfg, seq_len=16)
    assert got["dense"] == 2 * 24_576
    assert got["lm_head"] == 2 * 32 * 50
    assert got["attention"] == 2 * 2 * 2 * 16 * 32
    assert got["forward"] == 49_152 + 3_200 + 4_096 == 56_448
    assert got["training"] == 3 * 56_448
    assert flops_per_token(cfg, 16, causal_halving=True)["attention"] == 2_048


def test_matmul_params_match_the_built_linears():
    cfg = ModelConfig(**SMALL, n_kv_head=2, gated_mlp=True)
    model = build_model(cfg)
    linears = sum(m.weight.numel() for m in model.backbone.stack.modules() if isinstance(m, nn.Linear))
    assert matmul_params(cfg) == linears


def test_flops_close_to_6n_rule_for_gpt2_small():
    """Kaplan's C ~ 6N per training token (N non-embedding) plus the head and context terms."""
    cfg = get_preset("gpt2-small").config()
    got = flops_per_token(cfg, 1024)
    n = 85_056_000 - 38_400 - 12 * (3 * 768 + 768 + 3072 + 768)  # non-embedding minus norms and biases
    assert got["training"] == 6 * n + 6 * 768 * 50257 + 3 * 4 * 12 * 1024 * 768


# ---- memory ----------------------------------------------------------------------------

def test_memory_positive_and_scales_with_batch():
    model = build_model(ModelConfig(**SMALL))
    one, two = memory_estimate(model, 1, 16), memory_estimate(model, 2, 16)
    for key in ("weights", "gradients", "optimizer_state", "activations", "logits", "total"):
        assert one[key] > 0
    assert two["activations"] == 2 * one["activations"] and two["logits"] == 2 * one["logits"]
    assert two["weights"] == one["weights"] == 4 * n_params(model)
    assert one["optimizer_state"] == 8 * n_params(model)  # AdamW: two fp32 moments
    assert one["total"] == sum(one[k] for k in ("weights", "gradients", "optimizer_state", "activations", "logits"))
    assert "estimate" in one["note"]


def test_memory_dtypes():
    model = build_model(ModelConfig(**SMALL))
    fp32, bf16 = memory_estimate(model, 2, 16, "fp32"), memory_estimate(model, 2, 16, "bf16")
    auto = memory_estimate(model, 2, 16, "bf16-autocast")
    assert bf16["weights"] * 2 == fp32["weights"] == auto["weights"]
    assert bf16["optimizer_state"] == fp32["optimizer_state"]
    assert bf16["activations"] < fp32["activations"] and auto["activations"] == bf16["activations"]
    with pytest.raises(ValueError, match="dtype"):
        memory_estimate(model, 2, 16, "fp8")


def test_activations_reduce_to_korthikanti():
    """16-bit, dropout on, d_ff = 4h: s*b*h*(34 + 5*a*s/h) bytes per layer (their eq. 1)."""
    cfg = ModelConfig(vocab_size=50, d_model=64, n_layer=1, n_head=4, max_seq_len=32, dropout=0.1)
    s, b, h, a = 32, 3, 64, 4
    assert activation_bytes_per_layer(cfg, b, s, elem=2) == s * b * h * 34 + 5 * a * s * s * b
    fused = activation_bytes_per_layer(cfg, b, s, elem=2, fused_attention=True)
    assert fused == s * b * h * 34 + 4 * a * s * b


# ---- report ----------------------------------------------------------------------------

def test_report_and_units(gpt2_small):
    text = format_report(gpt2_small, seq_len=1024, batch=8)
    for expected in ("124.4M", "feed_forward", "FFN share", "MFLOPs", "GiB", "estimate"):
        assert expected in text
    assert human_count(124_439_808) == "124.4M"
    assert human_bytes(1.2 * 2**30) == "1.2 GiB"
    assert human_bytes(512) == "512 B"
    assert human_flops(2.5e9) == "2.5 GFLOPs"


def test_bad_sizes_are_rejected():
    model = build_model(ModelConfig(**SMALL))
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(model.cfg, 0)
    with pytest.raises(ValueError, match="batch"):
        memory_estimate(model, 0, 16)
