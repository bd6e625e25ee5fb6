"""tfamily's GGUF block kernels (nn.native.gguf_matmul, nn.quant.GGUFLinear): every block kind
read exactly as the `gguf` package reads it, and products within the error that rounding x to
int8 blocks can make, no more."""

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import native
from tfamily.nn.quant import GGUFLinear

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402

needs_kernel = pytest.mark.skipif(not native.gguf_available(),
                                  reason="no AVX-512 VNNI (or no C compiler) here: GGUF files use torch's kernels")
on_x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the plain-C build is made for x86-64")

# where each kind keeps its fp16 scales (d, and m or dmin) inside a block
HALVES = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208]}
KINDS = list(native.GGUF_BLOCKS)


def random_blocks(kind: str, rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """(rows, bytes a row) of valid ``kind`` blocks: random codes, sub-scales and bits, and
    fp16 scales of a realistic size (random bytes there could be inf or NaN)."""
    rng = np.random.default_rng(seed)
    per_block, nbytes = native.GGUF_BLOCKS[kind]
    b = rng.integers(0, 256, (rows, width // per_block, nbytes), dtype=np.uint8)
    for at in HALVES[kind]:
        scale = (rng.random((rows, width // per_block, 1)) * 0.02 + 0.001).astype(np.float16)
        b[..., at:at + 2] = scale.view(np.uint8)
    return torch.from_numpy(b.reshape(rows, -1).copy())


def reference(blocks: torch.Tensor, kind: str, width: int) -> torch.Tensor:
    """The matrix as the gguf package dequantises it (its own numpy code), fp32 (rows, width)."""
    values = dequantize(blocks.numpy(), gguf.GGMLQuantizationType[kind])
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(blocks.shape[0], width)


def int8_rounding_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(N, out) bound on |x W^T - x' W^T| where x' is x rounded to int8 in blocks of 32 (each
    value off by at most half its block's step absmax / 127)."""
    n, width = x.shape
    step = x.double().abs().reshape(n, width // 32, 32).amax(-1) / 127  # (N, blocks)
    per_block = w.double().abs().reshape(w.shape[0], width // 32, 32).sum(-1)  # (out, blocks)
    return 0.5 * step @ per_block.t()


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
def test_dequantize_is_the_gguf_packages_values(kind):
    width = 512
    blocks = random_blocks(kind, 24, width)
    want = reference(blocks, kind, width)
    torch.testing.assert_close(native.gguf_dequantize(blocks, kind, width), want, rtol=1e-6, atol=0)
    bf16 = native.gguf_dequantize(blocks, kind, width, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, want.bfloat16())


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 3, 8])
def test_matmul_is_exact_but_for_x_rounded_to_int8_blocks(kind, n):
    width, rows = 768, 37  # 3 super-blocks; a row count no tile divides
    blocks = random_blocks(kind, rows, width, seed=n)
    w = reference(blocks, kind, width)
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(n)).bfloat16()
    bias = torch.randn(rows, generator=torch.Generator().manual_seed(7)).bfloat16()
    exact = x.double() @ w.double().t() + bias.double()  # (n, rows)
    y = native.gguf_matmul(x, blocks, kind, bias)
    assert y.shape == (n, rows) and y.dtype == torch.bfloat16
    # x's rounding, then fp32 sums and one bf16 rounding of the result (half a step: 2^-9 relative)
    allowed = int8_rounding_bound(x, w) + exact.abs() * 2 ** -8 + 1e-4
    assert ((y.double() - exact).abs() <= allowed).all()
    # and the bound is not loose: the error is a real fraction of it somewhere
    assert (y.double() - exact).abs().max() > 0.01 * int8_rounding_bound(x, w).max()


@on_x86
@pytest.mark.parametrize("kind", ["Q4_1", "Q5_0", "Q6_K"])
def test_the_plain_c_build_multiplies_without_rounding_x(kind, tmp_path, monkeypatch):
    """Built for any x86-64 (no AVX-512), the same file takes its plain-C loop: fp32 products
    of the unrounded x, correct but slow (so tfamily does not choose it, gguf_available)."""
    monkeypatch.setenv("TFAMILY_CACHE", str(tmp_path))
    native.library.cache_clear()
    native.gguf_kernels.cache_clear()
    try:
        lib = native.gguf_kernels("x86-64")
        if lib is None:
            pytest.skip("no C compiler with OpenMP here")
        assert lib.tf_gguf_simd() == 0
        width = 512
        blocks = random_blocks(kind, 19, width)
        w = reference(blocks, kind, width)
        x = torch.randn(2, width).bfloat16()
        exact = x.double() @ w.double().t()
        y = native.gguf_matmul(x, blocks, kind, march="x86-64")
        torch.testing.assert_close(y.double(), exact, rtol=2 ** -8, atol=1e-5 * exact.abs().max().item())
        torch.testing.assert_close(native.gguf_dequantize(blocks, kind, width, march="x86-64"), w, rtol=1e-6, atol=0)
    finally:
        native.library.cache_clear()
        native.gguf_kernels.cache_clear()


@needs_kernel
def test_a_layer_of_mixed_kinds_is_its_parts_stacked():
    """q|k|v with v in another kind, as Qwen2.5's files have it: one output, each part's rows."""
    width = 256
    parts = [("Q5_0", random_blocks("Q5_0", 64, width, 1)), ("Q5_0", random_blocks("Q5_0", 16, width, 2)),
             ("Q8_0", random_blocks("Q8_0", 16, width, 3))]
    bias = torch.randn(96)
    layer = GGUFLinear(parts, width, bias)
    assert layer.kinds == ("Q5_0", "Q8_0") and layer.rows == (80, 16)  # neighbours of one kind: one call
    x = torch.randn(2, 5, width).bfloat16()
    rows = x.reshape(-1, width)
    want = torch.cat([native.gguf_matmul(rows, b, k) for k, b in parts], dim=1) + bias.bfloat16()
    got = layer(x)
    assert got.shape == (2, 5, 96)
    torch.testing.assert_close(got.reshape(-1, 96).float(), want.float(), atol=0.02, rtol=0.01)
    w = torch.cat([reference(b, k, width) for k, b in parts])
    torch.testing.assert_close(layer.dequantized(torch.float32), w, rtol=1e-6, atol=0)


@needs_kernel
def test_many_rows_take_one_bf16_matmul_of_the_dequantised_matrix(monkeypatch):
    width = 256
    layer = GGUFLinear([("Q4_K", random_blocks("Q4_K", 48, width))], width, torch.randn(48))
    calls = []
    original = native.gguf_matmul_parts
    monkeypatch.setattr(native, "gguf_matmul_parts", lambda *a: calls.append(a[0].shape[0]) or original(*a))
    x = torch.randn(native.GGUF_MAX_ROWS + 1, width).bfloat16()
    want = F.linear(x, layer.dequantized(), layer.bias)
    torch.testing.assert_close(layer(x), want)
    assert not calls  # the kernel was not called for these rows
    layer(x[: native.GGUF_MAX_ROWS])
    assert calls == [native.GGUF_MAX_ROWS]


@needs_kernel
def test_blocks_that_do_not_fit_are_refused_by_name():
    blocks = random_blocks("Q5_0", 4, 64)
    x = torch.randn(1, 64).bfloat16()
    with pytest.raises(ValueError, match="GGUF kind 'Q3_K' has no kernel here"):
        native.gguf_matmul(x, blocks, "Q3_K")
    with pytest.raises(ValueError, match=r"Q8_0 blocks of 64-wide rows must be a \(rows, 68\) uint8 tensor"):
        native.gguf_matmul(x, blocks, "Q8_0")
    with pytest.raises(ValueError, match="Q4_K rows are whole blocks of 256 weights; 64 is not"):
        GGUFLinear([("Q4_K", blocks)], 64)
    with pytest.raises(ValueError, match="x must be a contiguous bf16"):
        native.gguf_matmul(x.float(), blocks, "Q5_0")
    with pytest.raises(ValueError, match="bias of shape"):
        GGUFLinear([("Q5_0", blocks)], 64, torch.zeros(5))


def test_turned_off_there_is_no_gguf_kernel(monkeypatch):
    monkeypatch.setenv("TFAMILY_NATIVE", "0")
    native.library.cache_clear()
    native.gguf_kernels.cache_clear()
    try:
        assert not native.gguf_available()
    finally:
        native.library.cache_clear()
        native.gguf_kernels.cache_clear()


@needs_kernel
def test_a_gated_mlp_fused_into_one_gguf_call_computes_the_same():
    """MLP.fuse_gate with GGUFLinear.stacked: gate and up in one kernel call, the same numbers
    (the same rows, the same rounding of x)."""
    from tfamily.nn.mlp import MLP

    d, d_ff = 64, 96
    mlp = MLP(d, d_ff, "silu", gated=True, bias=False, dropout=0.0).eval().to(torch.bfloat16)
    mlp.fc_in = GGUFLinear([("Q5_0", random_blocks("Q5_0", d_ff, d, 1))], d)
    mlp.fc_gate = GGUFLinear([("Q8_0", random_blocks("Q8_0", d_ff, d, 2))], d)
    x = torch.randn(1, 3, d).bfloat16()
    with torch.inference_mode():
        apart = mlp(x)
        fused = GGUFLinear.stacked([mlp.fc_in, mlp.fc_gate])
        assert fused.kinds == ("Q5_0", "Q8_0") and fused.out_features == 2 * d_ff
        mlp.fuse_gate(fused)
        assert mlp.fc_in is None and mlp.fc_gate is None and mlp.fc_in_gate is fused
        torch.testing.assert_close(mlp(x), apart, atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs a gated MLP"):
        MLP(d, d_ff, "gelu", gated=False, bias=False, dropout=0.0).fuse_gate(fused)
