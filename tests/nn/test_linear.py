import pytest
import torch
import torch.nn.functional as F

import tfamily.nn.linear as L
from tfamily.nn.linear import ACTIVATIONS, EPILOGUES, Linear, linear, linear_act, onednn_applies

needs_onednn = pytest.mark.skipif(not L.ONEDNN, reason="this torch has no oneDNN (mkldnn) kernels")


def _pair(bias=True, seed=0):
    torch.manual_seed(seed)
    ours = Linear(24, 40, bias=bias)
    ref = torch.nn.Linear(24, 40, bias=bias)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_nn_linear_forward_and_backward(bias):
    ours, ref = _pair(bias)
    x = torch.randn(3, 7, 24, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    assert onednn_applies(x, ours.weight)
    y, y_ref = ours(x), ref(x_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_frozen_weight_gets_no_gradient_and_input_still_does():
    ours, _ = _pair()
    ours.weight.requires_grad_(False)
    x = torch.randn(5, 24, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and x.grad is not None and ours.bias.grad is not None


@needs_onednn
@pytest.mark.parametrize("activation", sorted(EPILOGUES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_activation_matches_activation_of_linear(activation, dtype):
    ours, ref = _pair()
    ours, ref = ours.to(dtype), ref.to(dtype)
    x = torch.randn(4, 9, 24, dtype=dtype)
    act = ACTIVATIONS[activation]
    with torch.inference_mode():
        got, want = linear_act(x, ours, activation), act(ref(x))
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    torch.testing.assert_close(got.float(), want.float(), **tol)


@needs_onednn
def test_linear_act_keeps_the_activation_differentiable_when_training():
    ours, ref = _pair()
    x = torch.randn(6, 24, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    linear_act(x, ours, "gelu").sum().backward()
    F.gelu(ref(x_ref)).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)


def test_autocast_and_other_dtypes_take_f_linear():
    ours, ref = _pair()
    x = torch.randn(3, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_applies(x, ours.weight)
        y, y_ref = ours(x), ref(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref)
    assert not onednn_applies(x.double(), ours.weight.double())
    torch.testing.assert_close(linear(x.double(), ours.weight.double()), F.linear(x.double(), ours.weight.double()))


def test_without_onednn_everything_is_f_linear(monkeypatch):
    monkeypatch.setattr(L, "ONEDNN", False)
    ours, ref = _pair()
    x = torch.randn(3, 24)
    assert not onednn_applies(x, ours.weight)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(linear_act(x, ours, "relu"), F.relu(ref(x)))


@needs_onednn
def test_a_trainable_bias_alone_still_gets_its_gradient_through_linear_act():
    """BitFit-style: weight frozen, input without gradient, bias trained."""
    ours, _ = _pair()
    ours.weight.requires_grad_(False)
    linear_act(torch.randn(5, 24), ours, "relu").sum().backward()
    assert ours.bias.grad is not None and ours.bias.grad.abs().sum() > 0
