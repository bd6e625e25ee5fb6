import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import loss as loss_mod
from tfamily.nn.loss import IGNORE_INDEX, DeferredHead, Workspace, linear_cross_entropy


def reference(features, weight, bias, targets, smoothing=0.0):
    logits = F.linear(features, weight, bias)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=smoothing)


def leaves(seed, n=3, t=7, d=16, v=53, bias=True):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, t, d, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(v, d, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(v, generator=g, dtype=torch.float64).requires_grad_() if bias else None
    targets = torch.randint(0, v, (n, t), generator=g)
    targets[0, :3] = IGNORE_INDEX
    return features, weight, b, targets


def grads(loss, tensors):
    return torch.autograd.grad(loss, [x for x in tensors if x is not None])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows_per_chunk", [1000, 4, 5])  # one chunk, even chunks, a ragged last chunk
def test_equals_plain_cross_entropy_with_gradients(monkeypatch, smoothing, bias, rows_per_chunk):
    monkeypatch.setattr(loss_mod, "chunk_rows", lambda n, v: min(n, rows_per_chunk))
    f, w, b, t = leaves(0, bias=bias)
    ours = linear_cross_entropy(f, w, b, t, smoothing)
    theirs = reference(f, w, b, t, smoothing)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-10, atol=1e-12)
    for a, r in zip(grads(ours * 3.0, (f, w, b)), grads(theirs * 3.0, (f, w, b))):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_bf16_autocast_is_as_accurate_as_the_plain_bf16_path():
    """Under autocast the head's matmuls run in bf16 on both paths; against an fp64 reference
    the chunked loss and its gradients are no less accurate than nn.Linear + cross_entropy."""
    f64, w64, b64, t = leaves(1, n=4, t=32, d=64, v=300)
    exact = reference(f64, w64, b64, t)
    exact_grads = grads(exact, (f64, w64, b64))
    f, w, b = (x.detach().float().requires_grad_() for x in (f64, w64, b64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(f, w, b, t)
        plain = reference(f, w, b, t)
    assert ours.dtype == torch.float32
    assert abs(ours.item() - exact.item()) <= 1.5 * abs(plain.item() - exact.item()) + 1e-3
    for a, p, x in zip(grads(ours, (f, w, b)), grads(plain, (f, w, b)), exact_grads):
        assert a.dtype == p.dtype == torch.float32
        err_ours, err_plain = (a.double() - x).abs().max(), (p.double() - x).abs().max()
        assert err_ours <= 1.5 * err_plain + 1e-6


def test_all_targets_ignored_gives_zero_loss_and_zero_gradient():
    f, w, b, t = leaves(2)
    t.fill_(IGNORE_INDEX)
    loss = linear_cross_entropy(f, w, b, t)
    assert loss.item() == 0.0
    assert all(g.abs().max() == 0 for g in grads(loss, (f, w, b)))


def test_no_grad_gives_the_loss_only():
    f, w, b, t = leaves(3)
    with torch.no_grad():
        loss = linear_cross_entropy(f, w, b, t)
    torch.testing.assert_close(loss, reference(f, w, b, t).detach())


def test_shape_mismatch_is_a_clear_error():
    f, w, b, t = leaves(4)
    with pytest.raises(ValueError, match="leading dimensions"):
        linear_cross_entropy(f, w, b, t[:, :-1])


def test_deferred_head_logits_are_the_linear_layer():
    f, w, b, _ = leaves(5)
    torch.testing.assert_close(DeferredHead(f, w, b).logits(), F.linear(f, w, b))


def test_workspace_reuses_its_buffers_and_keeps_names_apart():
    ws = Workspace()
    a = ws.get("logits", 4, 8, torch.float32, torch.device("cpu"))
    b = ws.get("logits", 2, 8, torch.float32, torch.device("cpu"))  # smaller: a view of the same memory
    c = ws.get("weight", 4, 8, torch.float32, torch.device("cpu"))
    assert b.data_ptr() == a.data_ptr() and c.data_ptr() != a.data_ptr()
    assert ws.get("logits", 4, 8, torch.bfloat16, torch.device("cpu")).data_ptr() != a.data_ptr()
    bigger = ws.get("logits", 8, 8, torch.float32, torch.device("cpu"))
    assert bigger.shape == (8, 8)
    ws.release()
    assert not ws.buffers


def test_repeated_calls_on_shared_buffers_give_the_same_loss_and_gradients():
    torch.manual_seed(0)
    h = torch.randn(6, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (6,))
    results = []
    for _ in range(2):
        h.grad = w.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = linear_cross_entropy(h, w, None, t)
        loss.backward()
        results.append((loss.detach(), h.grad.clone(), w.grad.clone()))
    for first, second in zip(*results):
        assert torch.equal(first, second)
