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
