"""The RNN encoder-decoder against its equations: additive attention written out pair by pair,
padding on either side of the source, and the decoder's first state."""

import torch

from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version


def model_of(name="rnn-seq2seq-tiny"):
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset(name).config()).replace(dropout=0.0)).eval()


def test_additive_attention_follows_the_equation():
    """e_ij = v . tanh(W s_i + U h_j + b), a = softmax over real source tokens, c_i = sum a_ij h_j."""
    model = model_of()
    att = model.attention
    states, memory = torch.randn(2, 3, model.cfg.d_model), torch.randn(2, 5, model.cfg.d_model)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True]])
    context, weights = att(states, att.key(memory), memory, mask)
    for b in range(2):
        for i in range(3):
            real = [j for j in range(5) if mask[b, j]]
            e = torch.stack([att.score.weight[0] @ torch.tanh(att.query.weight @ states[b, i]
                                                               + att.key.weight @ memory[b, j] + att.key.bias)
                             for j in real])
            a = e.softmax(0)
            torch.testing.assert_close(weights[b, i, real], a, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(context[b, i], (a[:, None] * memory[b, real]).sum(0), atol=1e-5, rtol=1e-5)
    assert weights[1, :, :2].abs().max() == 0  # padding gets no attention


def test_left_and_right_padded_sources_encode_alike():
    model = model_of()
    src = torch.randint(3, model.cfg.vocab_size, (1, 6))
    pad = torch.zeros(1, 3, dtype=torch.long)
    left = torch.cat([pad, src], 1)
    right = torch.cat([src, pad], 1)
    real = torch.ones(1, 6, dtype=torch.bool)
    no = torch.zeros(1, 3, dtype=torch.bool)
    with torch.no_grad():
        alone = model.encode(src)
        from_left = model.encode(left, torch.cat([no, real], 1))[:, 3:]
        from_right = model.encode(right, torch.cat([real, no], 1))[:, :6]
    torch.testing.assert_close(from_left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_right, alone, atol=1e-5, rtol=1e-5)


def test_the_decoder_starts_from_the_mean_annotation():
    model = model_of()
    src = torch.randint(3, model.cfg.vocab_size, (2, 5))
    with torch.no_grad():
        memory = model.encode(src)
        h, c = model.first_state(memory, None)
        want = torch.tanh(model.init_state(memory.mean(1))).view(2, model.cfg.n_layer, -1).transpose(0, 1)
    torch.testing.assert_close(h, want)
    assert c.abs().max() == 0


def test_gru_cells_and_beam_search_through_the_shared_decoder():
    from tfamily.generation.beam import beam_search

    model = model_of("rnnsearch")
    model.cfg = model.cfg.replace(decoder_start_token_id=1)
    assert isinstance(model.decoder, torch.nn.GRU) and model.encoder.bidirectional
    hyps = beam_search(model, [[5, 6, 7], [8, 9]], beam_size=3, max_new_tokens=4, stop_token_ids=[2], n_best=2)
    assert len(hyps) == 2 and all(len(h) == 2 and 1 <= len(h[0].tokens) <= 4 for h in hyps)
    assert all(h[0].score >= h[1].score for h in hyps)
