"""The encoder-decoder Transformer: masks, padding, caching, and that it learns to translate
a toy language (reversal) end to end through the trainer and beam search."""

import numpy as np
import pytest
import torch

from tfamily.data.parallel import TokenBatches, TokenPairs
from tfamily.generation import beam_search
from tfamily.models import build_model
from tfamily.objectives import Seq2SeqObjective
from tfamily.presets import get_preset
from tfamily.training import TrainConfig, Trainer

PAD, BOS, EOS = 0, 1, 2


def tiny(**changes):
    fields = dict(vocab_size=40, d_model=64, n_layer=2, n_encoder_layer=2, n_head=4, d_ff=128, max_seq_len=32,
                  pad_token_id=PAD, decoder_start_token_id=BOS)
    return get_preset("transformer-tiny").config(**{**fields, **changes})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny()).eval()


def test_padding_a_source_changes_nothing_for_the_others(model):
    """Two sources of different lengths batched (the short one padded) give each the output it gets alone."""
    a, b = torch.randint(3, 40, (1, 9)), torch.randint(3, 40, (1, 4))
    tgt = torch.randint(3, 40, (1, 6))
    src = torch.full((2, 9), PAD)
    src[0], src[1, :4] = a[0], b[0]
    mask = src != PAD
    both = model(src, tgt.expand(2, -1), src_mask=mask).logits
    torch.testing.assert_close(both[0:1], model(a, tgt).logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(both[1:2], model(b, tgt).logits, rtol=0, atol=1e-5)


def test_cross_attention_never_reads_padded_source_positions(model):
    """Whatever sits in the padded slots of the source, the decoder's output is the same, and
    the encoder states of the real tokens too."""
    src = torch.randint(3, 40, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    tgt = torch.randint(3, 40, (2, 5))
    other = src.clone()
    other[0, 5:] = torch.randint(3, 40, (3,))
    out1, out2 = model(src, tgt, src_mask=mask), model(other, tgt, src_mask=mask)
    torch.testing.assert_close(out1.logits, out2.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out1.memory[0, :5], out2.memory[0, :5], rtol=0, atol=1e-6)


def test_cross_attention_weights_on_padding_are_zero(model):
    """The probabilities of the first decoder layer's cross-attention, recomputed from its
    projections, put zero mass on padded source positions and sum to one over the rest."""
    src = torch.randint(3, 40, (1, 7))
    mask = torch.tensor([[True] * 4 + [False] * 3])
    memory = model.encode(src, mask)
    attn = model.decoder.blocks[0].cross_attn
    q = torch.randn(1, 3, model.cfg.d_model)
    qh = attn._split(attn.q(q), attn.n_head)
    k, _ = attn.project_memory(memory)
    from tfamily.nn.masks import padding_mask
    scores = (qh @ k.transpose(-1, -2)) / attn.head_dim ** 0.5
    probs = scores.masked_fill(~padding_mask(mask), float("-inf")).softmax(-1)  # what attend() computes
    assert torch.all(probs[..., 4:] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_shared_embeddings_are_one_table(model):
    assert model.src_emb is None and model.lm_head.weight is model.tok_emb.weight
    separate = build_model(tiny(share_encoder_embeddings=False, tie_embeddings=False))
    assert separate.src_emb is not None and separate.lm_head.weight is not separate.tok_emb.weight


def test_paper_sizes():
    """Vaswani et al. report 65M (base) and 213M (big) parameters with their 37k vocabulary."""
    base = sum(p.numel() for p in build_model(get_preset("transformer-base").config()).parameters())
    assert 60e6 < base < 66e6
    with torch.device("meta"):
        big = sum(p.numel() for p in build_model(get_preset("transformer-big").config()).parameters())
    assert 205e6 < big < 220e6


def reversal_pairs(n, seed, vocab=40, lengths=(3, 9)):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        src = rng.integers(3, vocab, size=rng.integers(*lengths)).tolist()
        pairs.append((src, src[::-1]))
    return pairs


class ListTokenizer:
    """Stands in for a tokenizer: 'text' is already a list of ids."""

    def encode_batch(self, texts):
        return [list(t) for t in texts]


def test_learns_to_reverse_sequences(tmp_path):
    """A tiny model trained for a few seconds (700 steps) reverses unseen sequences: >= 99 % exact match."""
    torch.manual_seed(0)
    cfg = tiny(norm_placement="pre", final_norm=True)
    train = TokenBatches(TokenPairs.encode(ListTokenizer(), reversal_pairs(4000, 0)), max_tokens=640, seed=0)
    val = TokenBatches(TokenPairs.encode(ListTokenizer(), reversal_pairs(200, 1)), max_tokens=640, shuffle=False)
    tc = TrainConfig(out_dir=str(tmp_path / "rev"), steps=700, lr=3e-3, warmup=30, eval_interval=700,
                     eval_batches=2, progress=False, bf16=False, threads=1)
    trainer = Trainer(build_model(cfg), cfg, Seq2SeqObjective(PAD, BOS, EOS, label_smoothing=0.0), train, val, tc)
    trainer.fit()
    model = trainer.model.eval()
    test = reversal_pairs(200, 2)
    best = beam_search(model, [s + [EOS] for s, _ in test], beam_size=1, max_new_tokens=12, stop_token_ids=(EOS,))
    exact = np.mean([hyps[0].tokens == tgt for hyps, (_, tgt) in zip(best, test)])
    assert exact >= 0.99, exact


def _seq2seq_trainer(tmp_path, name, steps=10):
    torch.manual_seed(0)
    cfg = tiny(dropout=0.1)
    train = TokenBatches(TokenPairs.encode(ListTokenizer(), reversal_pairs(300, 0)), max_tokens=160, seed=0)
    val = TokenBatches(TokenPairs.encode(ListTokenizer(), reversal_pairs(40, 1)), max_tokens=160, shuffle=False)
    tc = TrainConfig(out_dir=str(tmp_path / name), steps=steps, lr=3e-3, warmup=2, eval_interval=5, eval_batches=2,
                     progress=False, bf16=False, log_interval=1)
    return Trainer(build_model(cfg), cfg, Seq2SeqObjective(PAD, BOS, EOS, label_smoothing=0.1), train, val, tc)


def test_resume_is_exact_with_token_batches(tmp_path):
    """Stopped at step 4 and resumed, a run gives the losses of one that never stopped (dropout on)."""
    straight = _seq2seq_trainer(tmp_path, "a")
    straight.fit()
    first = _seq2seq_trainer(tmp_path, "b")
    first.fit(until=4)
    resumed = _seq2seq_trainer(tmp_path, "b")
    resumed.resume(tmp_path / "b" / "checkpoint")
    resumed.fit()
    assert first.losses + resumed.losses == straight.losses
