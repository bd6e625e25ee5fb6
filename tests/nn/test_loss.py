import contextlib

import pytest
import torch
import torch.nn.functional as F

from tfamily.nn import loss as loss_mod
from tfamily.nn.linear import Linear
from tfamily.nn.loss import IGNORE_INDEX, DeferredHead, Workspace, head_or_deferred, linear_cross_entropy, tied_table


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


class TiedLM(torch.nn.Module):
    """A table looked up twice (as T5 looks up source and target) and tied to the head."""

    def __init__(self, vocab=97, d=16):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, d)
        self.head = Linear(d, vocab, bias=False)
        self.head.weight = self.table.weight

    def loss(self, a, b, targets, tied=True):
        with (tied_table(self.head, self.table, defer=True) if tied else contextlib.nullcontext()) as w:
            h = torch.tanh(self.table(a) + self.table(b))
        _, head = head_or_deferred(self.head, h, True, w if tied else None)
        return linear_cross_entropy(head.features, head.weight, head.bias, targets)


def table_gradient_allocations(model, *args, **options):
    """How many tensors of the table's size the forward + backward allocated, and the gradient."""
    from torch.profiler import profile
    model.zero_grad(set_to_none=True)
    size = model.table.weight.numel() * 4
    with profile(profile_memory=True) as prof:
        model.loss(*args, **options).backward()
    n = sum(1 for e in prof.events() if e.cpu_memory_usage == size
            and not any(c.cpu_memory_usage == size for c in e.cpu_children))
    return n, model.table.weight.grad


def test_tied_table_sums_its_gradient_in_the_heads_own_tensor():
    """The head's dense gradient is the only (V, d) tensor made: the lookups' sparse rows are
    added into it in place (without the mechanism: one fresh (V, d) tensor per lookup)."""
    torch.manual_seed(0)
    model = TiedLM()
    a, b, t = torch.randint(0, 97, (3, 5)), torch.randint(0, 97, (3, 5)), torch.randint(0, 97, (3, 5))
    n_tied, g_tied = table_gradient_allocations(model, a, b, t)
    n_plain, g_plain = table_gradient_allocations(model, a, b, t, tied=False)
    assert (n_tied, n_plain) == (1, 3)
    assert not g_tied.is_sparse
    torch.testing.assert_close(g_tied, g_plain, atol=1e-7, rtol=1e-6)
    assert not model.table.sparse  # switched back after the forward


def test_tied_table_leaves_other_cases_alone():
    model = TiedLM()
    with tied_table(model.head, model.table, defer=False) as w:
        assert w is None and not model.table.sparse
    with torch.no_grad(), tied_table(model.head, model.table, defer=True) as w:
        assert w is None and not model.table.sparse
    model.head.weight = torch.nn.Parameter(model.table.weight.detach().clone())  # untied: lookups stay dense
    with tied_table(model.head, model.table, defer=True) as w:
        assert w is None and not model.table.sparse
