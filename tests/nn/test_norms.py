import pytest
import torch
import torch.nn.functional as F

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
