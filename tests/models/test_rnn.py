"""The recurrent LM against the LSTM and GRU equations written out step by step."""

import pytest
import torch

from tfamily.models import build_model
from tfamily.models.rnn import RNNCache, left_to_right
from tfamily.presets import get_preset, tiny_version


def model_of(cell: str):
    torch.manual_seed(0)
    cfg = tiny_version(get_preset(f"{cell}-tiny").config())
    return build_model(cfg).eval()


def naive_lstm_layer(x, w_ih, w_hh, b_ih, b_hh):
    """Hochreiter & Schmidhuber's LSTM with a forget gate, one step at a time (PyTorch's gate order i, f, g, o):
    i, f, o = sigmoid(W x + U h + b), g = tanh(...), c' = f c + i g, h' = o tanh(c')."""
    h = c = torch.zeros(x.shape[0], w_hh.shape[1])
    out = []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 1)


def naive_gru_layer(x, w_ih, w_hh, b_ih, b_hh):
    """Cho et al.'s GRU (PyTorch's gate order r, z, n): r, z = sigmoid(...), n = tanh(W_n x + b + r (U_n h + b')),
    h' = (1 - z) n + z h."""
    h = torch.zeros(x.shape[0], w_hh.shape[1])
    out = []
    for t in range(x.shape[1]):
        xr, xz, xn = (x[:, t] @ w_ih.T + b_ih).chunk(3, -1)
        hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cell, layer", [("lstm", naive_lstm_layer), ("gru", naive_gru_layer)])
def test_logits_follow_the_equations(cell, layer):
    model = model_of(cell)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    rnn = model.backbone.rnn
    x = model.backbone.tok_emb(ids)
    for n in range(model.cfg.n_layer):
        x = layer(x, *(getattr(rnn, f"{w}_l{n}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    want = x @ model.backbone.tok_emb.weight.T  # the tied head
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_rows_continue_from_their_own_state(cell):
    """A left-padded batch fed in two calls through one cache gives each row what it gets alone."""
    model = model_of(cell)
    a, b = [5, 6, 7, 8, 9], [3, 4]
    ids = torch.tensor([a, [0, 0, 0] + b])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]], dtype=torch.bool)
    cache = model.make_cache(2)
    with torch.no_grad():
        model(ids, attention_mask=mask, cache=cache)
        step = model(torch.tensor([[10], [11]]), cache=cache).logits[:, -1]
        alone_a = model(torch.tensor([a + [10]])).logits[0, -1]
        alone_b = model(torch.tensor([b + [11]])).logits[0, -1]
    torch.testing.assert_close(step, torch.stack([alone_a, alone_b]), atol=1e-5, rtol=1e-5)
    assert cache.length == 6


def test_a_row_with_no_real_token_keeps_its_state():
    model = model_of("lstm")
    cache = model.make_cache(2)
    with torch.no_grad():
        model(torch.tensor([[1, 2], [3, 4]]), cache=cache)
        before = cache.h[:, 1].clone()
        model(torch.tensor([[5], [0]]), attention_mask=torch.tensor([[True], [False]]), cache=cache)
    torch.testing.assert_close(cache.h[:, 1], before, atol=0, rtol=0)


def test_reorder_and_left_to_right():
    cache = RNNCache()
    cache.update((torch.arange(6.).view(1, 3, 2), torch.zeros(1, 3, 2)), lstm=True, tokens=1)
    cache.reorder(torch.tensor([2, 0]))
    assert cache.h[0, :, 0].tolist() == [4.0, 0.0]
    x = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    lengths = torch.tensor([2, 4])
    front = left_to_right(x, lengths)
    assert front.tolist() == [[1, 2, 0, 0], [3, 4, 5, 6]]
    assert left_to_right(front, lengths, back=True).tolist() == x.tolist()


# ---- the ELMo-style bidirectional LM ----------------------------------------------------

def bilm():
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset("bilstm-tiny").config())).eval()


def test_each_direction_reads_only_its_side():
    """The forward LM at position t has read tokens 0..t, the backward LM tokens t..T-1: so
    each can predict its target without having seen it."""
    model = bilm()
    ids = torch.randint(0, model.cfg.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a.logits[:, :5], b.logits[:, :5], atol=0, rtol=0)  # forward: left of 5 unchanged
    assert not torch.allclose(a.logits[:, 5:], b.logits[:, 5:])
    torch.testing.assert_close(a.backward.logits[:, 6:], b.backward.logits[:, 6:], atol=0, rtol=0)  # backward: right of 5
    assert not torch.allclose(a.backward.logits[:, :6], b.backward.logits[:, :6])


def test_backward_states_are_the_lstm_run_right_to_left():
    model = bilm()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(3))
    rnn = model.backbone.backward_rnn
    x = model.backbone.tok_emb(ids).flip(1)
    for n in range(model.cfg.n_layer):
        x = naive_lstm_layer(x, *(getattr(rnn, f"{w}_l{n}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    with torch.no_grad():
        hidden = model(ids).hidden
    torch.testing.assert_close(hidden[..., model.cfg.d_model // 2:], x.flip(1), atol=1e-5, rtol=1e-5)


def test_bilm_objective_targets_and_loss():
    from tfamily.objectives import IGNORE_INDEX, BiLMObjective
    objective = BiLMObjective()
    batch = objective.prepare(torch.tensor([[10, 11, 12, 13]]))
    assert batch.inputs["ids"].tolist() == [[10, 11, 12]]
    assert batch.targets[..., 0].tolist() == [[11, 12, 13]]
    assert batch.targets[..., 1].tolist() == [[IGNORE_INDEX, 10, 11]]
    model = bilm()
    out = model(batch.inputs["ids"] % model.cfg.vocab_size)
    targets = batch.targets % model.cfg.vocab_size
    targets[..., 1][:, 0] = IGNORE_INDEX
    loss = objective.loss(out, type(batch)(batch.inputs, targets))
    want = (torch.nn.functional.cross_entropy(out.logits[0], targets[0, :, 0])
            + torch.nn.functional.cross_entropy(out.backward.logits[0, 1:], targets[0, 1:, 1])) / 2
    torch.testing.assert_close(loss, want)


def test_finetune_pools_a_bilstm_by_its_family_default():
    """A classifier on the BiLM pools the mean of its states (the registry's default): its first
    position's forward half has read one token only."""
    from tfamily.cli.finetune import _default_pooling
    assert _default_pooling(bilm()) == "mean"


@pytest.mark.parametrize("preset", ["lstm-tiny", "gru-tiny", "bilstm-tiny", "rnn-seq2seq-tiny"])
def test_recurrent_token_tables_start_at_unit_variance(preset):
    """torch's LSTM / GRU init assumes unit-variance inputs; tfamily's Transformer std (0.02)
    would leave a token almost no say in the state (models/init.py has the measurement)."""
    torch.manual_seed(0)
    cfg = get_preset(preset).config(vocab_size=2000)
    model = build_model(cfg)
    table = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight
    assert 0.95 < table.std().item() < 1.05
    gpt = build_model(get_preset("gpt-tiny").config(vocab_size=2000))
    assert abs(gpt.backbone.tok_emb.weight.std().item() - gpt.cfg.init_std) < 0.002
