"""BERT's masked-LM + NSP objective: statistics, specials, whole words, determinism, loss."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tfamily.data.sentences import SentencePairs
from tfamily.objectives import IGNORE_INDEX, OBJECTIVES, MaskedLMObjective

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V = 1000


def objective(**kw):
    return MaskedLMObjective(V, PAD, CLS, SEP, MASK, special_ids=(UNK,), **kw)


def pairs(n_rows, la=60, lb=60, seed=0, word_len=1):
    """Random ordinary tokens; words of ``word_len`` tokens each."""
    rng = np.random.default_rng(seed)
    a = [rng.integers(5, V, size=la) for _ in range(n_rows)]
    b = [rng.integers(5, V, size=lb) for _ in range(n_rows)]
    aw = [np.arange(la) // word_len for _ in range(n_rows)]
    bw = [np.arange(lb) // word_len + la // word_len + 1 for _ in range(n_rows)]
    return SentencePairs(a, b, aw, bw, rng.integers(0, 2, size=n_rows), rng.integers(0, 2**63, size=n_rows).astype(np.uint64))


def originals(raw):
    """(B, T) ids of [CLS] A [SEP] B [SEP] before masking (all rows the same length here)."""
    return torch.tensor(np.stack([np.concatenate([[CLS], a, [SEP], b, [SEP]]) for a, b in zip(raw.a, raw.b)]))


def test_registered():
    assert OBJECTIVES["mlm"] is MaskedLMObjective


def test_inputs_layout_and_token_types():
    raw = SentencePairs([np.array([10, 11])], [np.array([20, 21, 22])], [np.arange(2)], [np.arange(3) + 2],
                        np.array([1]), np.array([5], dtype=np.uint64))
    raw2 = SentencePairs([np.array([30])], [np.array([40])], [np.arange(1)], [np.arange(1) + 1],
                         np.array([0]), np.array([6], dtype=np.uint64))
    both = SentencePairs(raw.a + raw2.a, raw.b + raw2.b, raw.a_words + raw2.a_words, raw.b_words + raw2.b_words,
                         np.array([1, 0]), np.array([5, 6], dtype=np.uint64))
    batch = objective(mask_prob=0.01).prepare(both)
    assert set(batch.inputs) == {"ids", "attention_mask", "token_type_ids"}
    assert batch.inputs["ids"].dtype == torch.long and batch.inputs["attention_mask"].dtype == torch.bool
    assert batch.inputs["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]]
    assert batch.inputs["attention_mask"].tolist() == [[True] * 8, [True] * 5 + [False] * 3]
    ids = batch.inputs["ids"]
    assert ids[1].tolist()[:1] == [CLS] and ids[1, 2] == SEP and ids[1, 4] == SEP and ids[1, 5:].tolist() == [PAD] * 3
    assert batch.extra["nsp_labels"].tolist() == [1, 0] and batch.extra["nsp_labels"].dtype == torch.long
    assert batch.extra["n_tokens"] == 13 and batch.targets.shape == ids.shape


def test_masking_statistics_within_one_percent():
    raw = pairs(2000)  # 240,000 maskable tokens, ~36,000 chosen: 1 % is > 4 standard deviations
    batch = objective().prepare(raw)
    orig, ids, targets = originals(raw), batch.inputs["ids"], batch.targets
    maskable = ~torch.isin(orig, torch.tensor([CLS, SEP, PAD]))
    chosen = targets != IGNORE_INDEX
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.01
    assert torch.equal(targets[chosen], orig[chosen])  # targets are the original ids
    n = chosen.sum()
    as_mask = (ids == MASK) & chosen
    unchanged = (ids == orig) & chosen
    replaced = chosen & ~as_mask & ~unchanged  # a random token (rarely the same one: counts as unchanged)
    assert abs(as_mask.sum() / n - 0.8) < 0.01
    assert abs(replaced.sum() / n - 0.1) < 0.01
    assert abs(unchanged.sum() / n - 0.1) < 0.01
    assert torch.equal(ids[~chosen], orig[~chosen])  # nothing else changes
    assert not torch.isin(ids[replaced], torch.tensor([PAD, UNK, CLS, SEP, MASK])).any()  # never a special


def test_specials_and_padding_are_never_chosen():
    raw = pairs(50, la=3, lb=2)
    raw = SentencePairs(raw.a + [np.arange(5, 40)], raw.b + [np.arange(5, 20)], raw.a_words + [np.arange(35)],
                        raw.b_words + [np.arange(15) + 35], np.r_[raw.nsp_labels, 0], np.r_[raw.mask_seeds, 1])
    batch = objective(mask_prob=0.9).prepare(raw)  # short rows get padded
    ids, targets = batch.inputs["ids"], batch.targets
    special_positions = (batch.inputs["ids"] == CLS) | ~batch.inputs["attention_mask"]
    special_positions |= torch.zeros_like(ids, dtype=torch.bool).index_put_(
        (torch.arange(len(raw)), torch.tensor([len(a) + 1 for a in raw.a])), torch.tensor(True))
    assert (targets[special_positions] == IGNORE_INDEX).all()
    assert (ids[:, 0] == CLS).all() and (ids[~batch.inputs["attention_mask"]] == PAD).all()
    ordinary = batch.inputs["attention_mask"] & ~special_positions & (batch.inputs["ids"] != SEP)
    assert (targets[ordinary] != IGNORE_INDEX).float().mean() > 0.8  # the ordinary tokens really were chosen


@pytest.mark.parametrize("word_len", [3, 5])
def test_whole_word_masking_never_splits_a_word(word_len):
    raw = pairs(200, la=60, lb=60, word_len=word_len)
    batch = objective(whole_word=True).prepare(raw)
    chosen = (batch.targets != IGNORE_INDEX)[:, 1:61]  # segment A of every row: (B, 60)
    per_word = chosen.reshape(len(raw), 60 // word_len, word_len)
    assert (per_word.all(-1) | ~per_word.any(-1)).all()  # each word all chosen or not at all
    assert abs(chosen.float().mean() - 0.15) < 0.015  # still ~15 % of the tokens


def test_token_masking_does_split_words():
    """The whole-word test above could pass by accident only if plain masking also kept words whole."""
    raw = pairs(200, word_len=3)
    chosen = (objective().prepare(raw).targets != IGNORE_INDEX)[:, 1:61].reshape(200, 20, 3)
    assert (chosen.any(-1) & ~chosen.all(-1)).any()


def test_masking_is_a_pure_function_of_the_row_seeds():
    raw = pairs(32, seed=1)
    one, two = objective().prepare(raw), objective().prepare(raw)
    assert torch.equal(one.inputs["ids"], two.inputs["ids"]) and torch.equal(one.targets, two.targets)
    halves = [objective().prepare(raw[:16]), objective().prepare(raw[16:])]
    assert torch.equal(torch.cat([h.targets for h in halves]), one.targets)  # micro-batch split changes nothing
    reseeded = SentencePairs(raw.a, raw.b, raw.a_words, raw.b_words, raw.nsp_labels, raw.mask_seeds + np.uint64(1))
    assert not torch.equal(objective().prepare(reseeded).targets, one.targets)


def test_nsp_labels_from_the_sampler_are_balanced():
    from tfamily.data.sentences import Sentences, SentencePairSampler

    lengths = np.full(400, 6)
    s = Sentences(np.arange(2400, dtype=np.int32) % 900 + 5, np.tile(np.arange(6, dtype=np.int32), 400),
                  np.r_[0, np.cumsum(lengths)].astype(np.int64), np.repeat(np.arange(40, dtype=np.int32), 10))
    labels = np.concatenate([SentencePairSampler(s, 500, 32, seed=0).batch(step).nsp_labels for step in range(4)])
    assert abs(labels.mean() - 0.5) < 0.035  # 2,000 draws: about 3 standard deviations


@dataclass
class Out:
    logits: torch.Tensor
    nsp_logits: torch.Tensor | None = None


def test_loss_is_mlm_over_masked_positions_plus_nsp():
    raw = pairs(4, la=10, lb=10)
    obj = objective(mask_prob=0.3)
    batch = obj.prepare(raw)
    torch.manual_seed(0)
    logits = torch.randn(*batch.targets.shape, V)
    nsp = torch.randn(4, 2)
    chosen = batch.targets != IGNORE_INDEX
    mlm = F.cross_entropy(logits[chosen], batch.targets[chosen])
    assert torch.allclose(obj.loss(Out(logits), batch), mlm)
    assert torch.allclose(obj.loss(logits, batch), mlm)  # bare logits work too
    expected = mlm + F.cross_entropy(nsp, batch.extra["nsp_labels"])
    assert torch.allclose(obj.loss(Out(logits, nsp), batch), expected)
    assert torch.allclose(objective(mask_prob=0.3, nsp_weight=0.0).loss(Out(logits, nsp), batch), mlm)


def test_loss_with_nothing_masked_is_zero_not_nan():
    raw = pairs(1, la=1, lb=1)
    obj = objective(mask_prob=1e-9)
    batch = obj.prepare(raw)
    logits = torch.randn(*batch.targets.shape, V, requires_grad=True)
    loss = obj.loss(Out(logits), batch)
    assert loss.item() == 0.0
    loss.backward()


def test_from_tokenizer_and_errors():
    from tfamily.tokenizers import Tokenizer

    tok = Tokenizer.train("wordpiece", ["the dog plays with the other dogs"] * 5, vocab_size=60)
    obj = MaskedLMObjective.from_tokenizer(tok, whole_word=True)
    assert (obj.pad_id, obj.cls_id, obj.sep_id, obj.mask_id) == (0, 2, 3, 4)
    assert not np.isin([0, 1, 2, 3, 4], obj.random_pool).any()
    with pytest.raises(ValueError, match="needs the special tokens cls, sep, mask"):
        MaskedLMObjective.from_tokenizer(Tokenizer.train("char", ["abc"]))
    with pytest.raises(ValueError, match="replace_probs"):
        objective(replace_probs=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="mask_prob"):
        objective(mask_prob=0.0)


def test_whole_word_masking_keeps_wordpiece_words_whole_end_to_end(tmp_path):
    """Real pieces: a '##' continuation is chosen exactly when the piece before it is."""
    from tfamily.data.sentences import SentencePairSampler, Sentences, prepare_sentences
    from tfamily.tokenizers import Tokenizer

    words = ["playing", "unbelievable", "dogs", "walked", "quickly", "thinking", "the", "a", "runners"]
    rng = np.random.default_rng(0)
    lines = []
    for d in range(20):
        lines += [" ".join(rng.choice(words, size=8)) for _ in range(6)] + [""]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    tok = Tokenizer.train("wordpiece", [path.read_text()[:200]], vocab_size=40)  # small: words split into pieces
    info = prepare_sentences(path, tok, tmp_path / "d", val_fraction=0.0)
    raw = SentencePairSampler(Sentences.load(info.train_path), 300, 40, seed=0).batch(0)
    batch = MaskedLMObjective.from_tokenizer(tok, whole_word=True).prepare(raw)
    ids = originals_of(batch)
    chosen = batch.targets != IGNORE_INDEX
    continuation = torch.tensor([[tok.id_to_token(int(i)).startswith("##") for i in row] for row in ids])
    continuation[:, 0] = False
    # where a row is a truncated segment it may start with '##': skip the first token of each segment
    seg_start = torch.zeros_like(continuation)
    seg_start[:, 1] = True
    seg_start[torch.arange(len(raw)), torch.tensor([len(a) + 2 for a in raw.a])] = True
    check = continuation & ~seg_start
    assert check.sum() > 1000
    assert torch.equal(chosen[:, 1:][check[:, 1:]], chosen[:, :-1][check[:, 1:]])
    assert abs(chosen.sum() / batch.inputs["attention_mask"].sum() - 0.15 * 0.95) < 0.03


def originals_of(batch):
    """Unmasked ids: targets where chosen, inputs elsewhere."""
    return torch.where(batch.targets != IGNORE_INDEX, batch.targets, batch.inputs["ids"])
