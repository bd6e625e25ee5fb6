"""Sentences on disk and BERT sentence-pair sampling."""

import numpy as np
import pytest

from tfamily.data.sentences import (
    SentencePairSampler,
    Sentences,
    iter_sentences,
    prepare_sentences,
    split_point,
)
from tfamily.tokenizers import Tokenizer


def corpus(n_docs=30, per_doc=8):
    """Each sentence names its document and position, so pairs can be checked from text."""
    lines = []
    for d in range(n_docs):
        lines += [f"doc{d} sent{s} " + "word " * (1 + (d + s) % 5) for s in range(per_doc)] + [""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("wordpiece", [corpus()], vocab_size=200)


@pytest.fixture(scope="module")
def prepared(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "c.txt"
    path.write_text(corpus(), encoding="utf-8")
    return prepare_sentences(path, tok, path.parent / "data", val_fraction=0.1)


def where(tok, ids):
    """(doc, sentence) of every 'docD sentS' found in decoded ids."""
    words = tok.decode(ids).split()
    return [(int(w[3:]), int(n[4:])) for w, n in zip(words, words[1:]) if w.startswith("doc") and n.startswith("sent")]


def test_iter_sentences_splits_documents_on_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n\na one\na two\n\n\n  \nb one\r\n\nc one", encoding="utf-8")
    assert list(iter_sentences(path)) == [(3, 0, "a one"), (4, 0, "a two"), (8, 1, "b one"), (10, 2, "c one")]


def test_iter_sentences_names_bad_utf8_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match="bad.txt, line 2: not UTF-8"):
        list(iter_sentences(path))


def test_prepare_holds_out_whole_documents(prepared, tok):
    assert prepared.train_sentences + prepared.val_sentences == 30 * 8
    assert (prepared.train_docs, prepared.val_docs) == (27, 3)
    train, val = Sentences.load(prepared.train_path), Sentences.load(prepared.val_path)
    first_val = where(tok, val.ids[val.offsets[0]:val.offsets[1]])
    assert first_val == [(27, 0)] and val.docs[0] == 0  # renumbered from 0
    assert train.n_tokens == prepared.train_tokens and len(train.words) == train.n_tokens
    assert Tokenizer.load(prepared.train_path.parent).encode("doc1 sent2") == tok.encode("doc1 sent2")


def test_split_point_single_document_cuts_at_a_sentence():
    assert split_point(np.zeros(100, np.int32), 0.1) == 90
    assert split_point(np.array([0] * 50 + [1] * 30 + [2] * 20), 0.25) == 80
    assert split_point(np.array([0] * 5 + [1] * 5), 0.0) == 10


def test_words_of_a_joined_run_are_unique(tok):
    s = Sentences(*_store(tok, ["play playing", "playing x"]))
    ids, words = s.tokens(0, 2)
    assert len(ids) == len(words) and words[0] == 0
    assert np.all(np.diff(words) >= 0) and words[-1] == 3  # 4 words, numbered across both sentences


def _store(tok, texts):
    from tfamily.data.sentences import encode_sentences

    s = encode_sentences(tok, [(0, t) for t in texts])
    return s.ids, s.words, s.offsets, s.docs


@pytest.fixture(scope="module")
def sampler(prepared):
    return SentencePairSampler(Sentences.load(prepared.train_path), batch_size=400, max_len=24, seed=7)


def test_pairs_fit_max_len_and_labels_are_half_random(sampler):
    batch = sampler.batch(0)
    assert len(batch) == 400
    assert all(len(a) + len(b) + 3 <= 24 and len(a) > 0 and len(b) > 0 for a, b in zip(batch.a, batch.b))
    assert abs(batch.nsp_labels.mean() - 0.5) < 0.08  # 400 draws: 4 standard deviations
    assert set(np.unique(batch.nsp_labels)) == {0, 1}


def positional(lengths, docs):
    """A store whose token ids are their own global positions, so every token says where it came from."""
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    words = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
    return Sentences(np.arange(offsets[-1], dtype=np.int32), words, offsets, np.asarray(docs, dtype=np.int32))


def doc_of_token(store, token):
    return store.docs[np.searchsorted(store.offsets, token, side="right") - 1]


def test_next_text_really_follows_and_random_comes_from_another_document():
    rng = np.random.default_rng(0)
    store = positional(rng.integers(2, 9, size=600), np.repeat(np.arange(60), 10))
    batch = SentencePairSampler(store, 400, 32, seed=2).batch(0)
    exact = 0
    for a, b, label in zip(batch.a, batch.b, batch.nsp_labels):
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)  # each segment is one contiguous run
        same_doc = doc_of_token(store, a[0]) == doc_of_token(store, b[0])
        if label == 0:
            assert same_doc and b[0] > a[-1]  # what follows A (its tail may have been cut off)
            exact += b[0] == a[-1] + 1
        else:
            assert not same_doc
    assert exact > 0.5 * (batch.nsp_labels == 0).sum()


def test_batches_are_a_pure_function_of_seed_and_step(prepared):
    s = Sentences.load(prepared.train_path)
    one, two = SentencePairSampler(s, 16, 24, seed=3), SentencePairSampler(s, 16, 24, seed=3)
    b1, b2 = one.batch(5), two.batch(5)
    assert all(np.array_equal(x, y) for x, y in zip(b1.a + b1.b, b2.a + b2.b))
    assert np.array_equal(b1.mask_seeds, b2.mask_seeds) and np.array_equal(b1.nsp_labels, b2.nsp_labels)
    other = one.batch(6)
    assert not all(np.array_equal(x, y) for x, y in zip(b1.a, other.a))
    assert not np.array_equal(b1.mask_seeds, other.mask_seeds)


def test_ranks_split_the_global_batch(prepared):
    s = Sentences.load(prepared.train_path)
    whole = SentencePairSampler(s, 8, 24, seed=1).batch(2)
    r0 = SentencePairSampler(s, 4, 24, seed=1, rank=0, world_size=2).batch(2)
    r1 = SentencePairSampler(s, 4, 24, seed=1, rank=1, world_size=2).batch(2)
    assert np.array_equal(np.concatenate([r0.mask_seeds, r1.mask_seeds]), whole.mask_seeds)
    assert all(np.array_equal(x, y) for x, y in zip(r0.a + r1.a, whole.a))


def test_slices_keep_rows_and_seeds(sampler):
    batch = sampler.batch(1)
    part = batch[10:20]
    assert len(part) == 10 and np.array_equal(part.mask_seeds, batch.mask_seeds[10:20])
    assert part.a[0] is batch.a[10]


def test_long_sentences_are_truncated_keeping_both_segments(tok):
    long = " ".join(f"w{i}" for i in range(100))
    s = Sentences(*_store(tok, [long, long, long]))
    batch = SentencePairSampler(s, 50, 16, seed=0, short_seq_prob=0.0).batch(0)
    assert all(len(a) + len(b) == 13 and len(a) >= 6 and len(b) >= 6 for a, b in zip(batch.a, batch.b))


def test_single_document_draws_random_b_far_from_a():
    store = positional(np.full(200, 4), np.zeros(200))
    batch = SentencePairSampler(store, 300, 20, seed=0, short_seq_prob=0.0).batch(0)
    for a, b, label in zip(batch.a, batch.b, batch.nsp_labels):
        if label == 1:  # 20 sentences (a tenth of the corpus) of 4 tokens at least between them
            assert b[0] >= a[-1] + 4 * 20 or b[-1] < a[0] - 4 * 20 + 4
    assert abs(batch.nsp_labels.mean() - 0.5) < 0.1


def test_short_seq_prob_gives_some_short_rows():
    store = positional(np.full(400, 4), np.repeat(np.arange(2), 200))  # long documents: rows can fill up
    lengths = [len(a) + len(b) for a, b in zip(*_ab(SentencePairSampler(store, 400, 40, seed=0).batch(0)))]
    full = sum(n == 37 for n in lengths)
    assert 0.8 * 400 < full < 0.97 * 400, full  # about 10 % of the rows have a shorter budget


def _ab(batch):
    return batch.a, batch.b


def test_corpus_without_any_next_sentence_is_refused(tok):
    s = Sentences(*_store(tok, ["a", "b"]))
    s.docs[:] = [0, 1]
    with pytest.raises(ValueError, match="no document has two sentences"):
        SentencePairSampler(s, 4, 16, seed=0)


def test_bad_arguments_are_named(prepared):
    s = Sentences.load(prepared.train_path)
    with pytest.raises(ValueError, match="max_len must leave room"):
        SentencePairSampler(s, 4, 4, seed=0)
    with pytest.raises(ValueError, match="rank must be in"):
        SentencePairSampler(s, 4, 16, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step must be"):
        SentencePairSampler(s, 4, 16, seed=0).batch(-1)


def test_prepare_with_a_segmenter_stores_chinese_words(tmp_path):
    text = "举头望明月\n低头思故乡\n\n床前明月光\n疑是地上霜\n"
    path = tmp_path / "zh.txt"
    path.write_text(text, encoding="utf-8")
    tok = Tokenizer.train("wordpiece", [text], vocab_size=60)
    words = {"举头望明月": ["举头", "望", "明月"], "低头思故乡": ["低头", "思", "故乡"],
             "床前明月光": ["床前", "明月光"], "疑是地上霜": ["疑是", "地上", "霜"]}
    info = prepare_sentences(path, tok, tmp_path / "out", val_fraction=0.0, segmenter=lambda t: words[t])
    s = Sentences.load(info.train_path)
    assert info.val_path is None and info.train_docs == 2 and s.docs.tolist() == [0, 0, 1, 1]
    assert s.words[:5].tolist() == [0, 0, 1, 2, 2] and s.words[10:15].tolist() == [0, 0, 1, 1, 1]
    plain = Sentences.load(prepare_sentences(path, tok, tmp_path / "plain", val_fraction=0.0).train_path)
    assert plain.words[:5].tolist() == [0, 1, 2, 3, 4]  # without a segmenter: one character, one word
