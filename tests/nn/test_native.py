"""tfamily's own CPU kernels (nn.native): built on first use, exact against a float64 product,
and optional: without a compiler, or turned off, the callers keep torch's kernels."""

import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import native
from tfamily.nn.quant import Int8Linear

needs_native = pytest.mark.skipif(not native.int8_available(), reason="no C compiler with OpenMP on this machine")


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty kernel cache and no library loaded yet; the usual state again afterwards."""
    monkeypatch.setenv("TFAMILY_CACHE", str(tmp_path / "tfamily"))
    native.library.cache_clear()
    native._int8_matvec.cache_clear()
    yield tmp_path / "tfamily" / "native"
    native.library.cache_clear()
    native._int8_matvec.cache_clear()


@needs_native
@pytest.mark.parametrize("n,width,out,bias", [(1, 64, 48, True), (3, 96, 37, False), (8, 576, 130, True), (2, 5, 1, True)])
def test_int8_matvec_is_the_float64_product_rounded_to_bf16(n, width, out, bias):
    torch.manual_seed(n + out)
    w = torch.randint(-127, 128, (out, width), dtype=torch.int8)
    scale = (torch.rand(out) / 50 + 1e-3).bfloat16()
    b = torch.randn(out).bfloat16() if bias else None
    x = torch.randn(n, width).bfloat16()
    exact = (x.double() @ w.double().t()) * scale.double() + (b.double() if bias else 0)  # (n, out)
    y = native.int8_matvec(x, w, scale, b)
    assert y.shape == (n, out) and y.dtype == torch.bfloat16
    # fp32 sums, then one rounding to bf16 (at most half a step of 2^-8 relative)
    torch.testing.assert_close(y.double(), exact, rtol=2 ** -8, atol=1e-6 * exact.abs().max().item())


@needs_native
def test_int8_matvec_refuses_tensors_it_cannot_read():
    w = torch.zeros(4, 8, dtype=torch.int8)
    scale = torch.ones(4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="x must be a contiguous torch.bfloat16"):
        native.int8_matvec(torch.zeros(1, 8), w, scale, None)
    with pytest.raises(ValueError, match="do not fit together"):
        native.int8_matvec(torch.zeros(1, 9, dtype=torch.bfloat16), w, scale, None)
    with pytest.raises(ValueError, match="not contiguous"):
        native.int8_matvec(torch.zeros(8, 2, dtype=torch.bfloat16).t(), w, scale, None)


@needs_native
def test_int8_linear_takes_the_native_kernel_for_one_row_only(monkeypatch):
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(64, 48))
    calls = []
    original = native.int8_matvec
    monkeypatch.setattr(native, "int8_matvec", lambda *a: calls.append(a[0].shape[0]) or original(*a))
    for rows in (native.INT8_MAX_ROWS, native.INT8_MAX_ROWS + 1):
        x = torch.randn(rows, 64, dtype=torch.bfloat16)
        want = F.linear(x.float(), layer.dequantized().float(), layer.bias.float())
        torch.testing.assert_close(layer(x).float(), want, atol=0.05, rtol=0.02)
    assert calls == [native.INT8_MAX_ROWS]  # the larger input went to torch's kernel


def test_turned_off_or_without_a_compiler_int8_layers_use_torch(fresh_build, monkeypatch):
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(32, 16))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    want = torch.ops.aten._weight_int8pack_mm(x, layer.weight_int8, layer.scale) + layer.bias
    monkeypatch.setenv("TFAMILY_NATIVE", "0")
    assert not native.int8_available()
    torch.testing.assert_close(layer(x), want)
    native.library.cache_clear()
    native._int8_matvec.cache_clear()
    monkeypatch.delenv("TFAMILY_NATIVE")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    assert native.library("int8_matvec") is None
    assert not fresh_build.exists()  # nothing was built


def test_a_failed_build_is_logged_and_leaves_no_library(fresh_build, monkeypatch, tmp_path, caplog):
    if native.shutil.which("cc") is None:
        pytest.skip("no C compiler")
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "broken.c").write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCES", sources)
    assert native.library("broken") is None
    assert "building broken.c failed" in caplog.text
    assert not list(fresh_build.glob("*"))  # no half-written file left behind


@needs_native
def test_the_built_library_is_named_for_the_cpu_it_was_built_on(fresh_build, monkeypatch):
    """A cache shared by two kinds of CPU must not hand one the other's -march=native build."""
    assert native.library("int8_matvec") is not None
    monkeypatch.setattr(native, "_cpu_identity", lambda: "model name : another CPU\nflags : sse2")
    native.library.cache_clear()
    assert native.library("int8_matvec") is not None
    assert len(list(fresh_build.glob("int8_matvec-*.so"))) == 2


@needs_native
def test_the_plain_c_loop_without_avx512_gives_the_same_sums(fresh_build, monkeypatch):
    """The kernel's fallback for CPUs without AVX-512 (built here with AVX-512 turned off) sums
    the same products: equal to the vector loop up to the order of fp32 additions."""
    torch.manual_seed(3)
    w = torch.randint(-127, 128, (37, 200), dtype=torch.int8)
    scale = (torch.rand(37) / 50 + 1e-3).bfloat16()
    x = torch.randn(2, 200).bfloat16()
    vector = native.int8_matvec(x, w, scale, None)
    monkeypatch.setattr(native, "FLAGS", (*native.FLAGS, "-mno-avx512f"))
    native.library.cache_clear()
    native._int8_matvec.cache_clear()
    plain = native.int8_matvec(x, w, scale, None)
    assert len(list(fresh_build.glob("int8_matvec-*.so"))) == 2  # a second build, under another name
    torch.testing.assert_close(plain.double(), vector.double(), rtol=2 ** -7, atol=1e-6)


# ---- the gated MLP's activation (gated.c) --------------------------------------------------------

needs_gate = pytest.mark.skipif(not native.silu_gate_available(), reason="no C compiler with OpenMP on this machine")


@needs_gate
@pytest.mark.parametrize("shape", [(1, 1, 2 * 4864), (5, 3, 2 * 77), (64, 2 * 1536)])
def test_silu_gate_is_torchs_silu_times_gate_bit_for_bit(shape):
    """Rounded as F.silu(a) * g rounds (silu to bf16, then the product): the same numbers, over
    a wide range of a (4 standard deviations), a width with a tail of the vector loop (77), and
    enough rows to share among threads."""
    ag = (torch.randn(*shape) * 4).bfloat16()
    a, g = ag.chunk(2, dim=-1)
    assert torch.equal(native.silu_gate(ag), F.silu(a) * g)


def test_silu_gate_plain_c_build_is_the_same(fresh_build):
    lib_gate = native._silu_gate("x86-64")
    if lib_gate is None:
        pytest.skip("no C compiler with OpenMP here")
    ag = (torch.randn(3, 2 * 100) * 4).bfloat16()
    a, g = ag.chunk(2, dim=-1)
    torch.testing.assert_close(native.silu_gate(ag, march="x86-64"), F.silu(a) * g, rtol=2 ** -8, atol=0)
    native._silu_gate.cache_clear()


@needs_gate
def test_a_fused_gate_mlp_takes_the_native_activation_in_bf16_inference_only(monkeypatch):
    from tfamily.nn import mlp as mlp_module
    from tfamily.nn.mlp import MLP

    torch.manual_seed(0)
    layer = MLP(32, 48, "silu", gated=True, bias=False, dropout=0.0).eval().bfloat16()
    reference = layer(x := torch.randn(2, 3, 32).bfloat16()).detach()
    fused = torch.nn.Linear(32, 96, bias=False).bfloat16()
    with torch.no_grad():
        fused.weight.copy_(torch.cat([layer.fc_in.weight, layer.fc_gate.weight]))
    layer.fuse_gate(fused)
    calls = []
    real = native.silu_gate
    monkeypatch.setattr(mlp_module.native, "silu_gate", lambda ag: calls.append(ag.shape) or real(ag))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference, rtol=0, atol=0)
    assert calls == [(2, 3, 96)]
    layer(x).sum().backward()  # with gradients: split, silu, product, as autograd records them
    assert calls == [(2, 3, 96)] and fused.weight.grad is not None
