import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import native
from tfamily.nn.norms import RMSNorm, rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_backward_matches_autograd_of_f_rms_norm(dtype):
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 16) * 3).to(dtype).requires_grad_(True)
    w = torch.randn(16).to(dtype).requires_grad_(True)
    x_ref, w_ref = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    y, y_ref = rms_norm(x, w, 1e-6), F.rms_norm(x_ref, (16,), w_ref, 1e-6)
    assert y.dtype == y_ref.dtype
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(y, y_ref, **tol)
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    torch.testing.assert_close(w.grad, w_ref.grad, **tol)


def test_rms_norm_passes_the_gradient_check():
    x = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-6), (x, w))


def test_frozen_norm_weight_gets_no_gradient():
    norm = RMSNorm(8)
    norm.weight.requires_grad_(False)
    x = torch.randn(2, 8, requires_grad=True)
    norm(x).sum().backward()
    assert norm.weight.grad is None and x.grad is not None


needs_native_norm = pytest.mark.skipif(not native.rms_norm_available(), reason="no C compiler with OpenMP here")


@needs_native_norm
@pytest.mark.parametrize("shape", [(1, 1, 896), (2, 7, 576), (3, 300, 64), (5, 33)])
def test_native_rms_norm_is_f_rms_norm_in_bf16(shape):
    """One call instead of F.rms_norm's twenty: the same fp32 arithmetic, the sum of squares in
    another order, so a result may differ from F.rms_norm's by one bf16 step, rarely."""
    torch.manual_seed(sum(shape))
    x = (torch.randn(shape) * 3).bfloat16()
    w = torch.randn(shape[-1]).bfloat16()
    want = F.rms_norm(x, (shape[-1],), w, 1e-6)
    got = native.rms_norm(x, w, 1e-6)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    step = want.float().abs() * 2 ** -7 + 1e-30  # one bf16 step (7 stored mantissa bits)
    assert ((got.float() - want.float()).abs() <= step).all()
    assert (got == want).float().mean() > 0.99


@needs_native_norm
def test_bf16_inference_takes_the_native_norm_and_everything_else_f_rms_norm(monkeypatch):
    calls = []
    original = native.rms_norm
    monkeypatch.setattr(native, "rms_norm", lambda *a: calls.append(a[0].dtype) or original(*a))
    x, w = torch.randn(2, 3, 32), torch.randn(32)
    with torch.inference_mode():
        rms_norm(x.bfloat16(), w.bfloat16(), 1e-6)  # bf16, no gradients: native
        rms_norm(x, w, 1e-6)  # fp32: F.rms_norm, exact as before
        rms_norm(x.bfloat16().transpose(0, 1), w.bfloat16(), 1e-6)  # not contiguous: F.rms_norm
    rms_norm(x.bfloat16().requires_grad_(True), w.bfloat16(), 1e-6)  # training: the hand-written backward
    assert calls == [torch.bfloat16]
    monkeypatch.setattr(native, "rms_norm_available", lambda: False)
    with torch.inference_mode():
        torch.testing.assert_close(rms_norm(x.bfloat16(), w.bfloat16(), 1e-6),
                                   F.rms_norm(x.bfloat16(), (32,), w.bfloat16(), 1e-6))
    assert calls == [torch.bfloat16]
