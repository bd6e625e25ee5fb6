"""Parallel data: reading aligned files and TSVs, and batches by token count."""

import gzip

import numpy as np
import pytest

from tfamily.data.parallel import TokenBatches, TokenPairs, pad_batch, read_parallel


class ListTokenizer:
    def encode_batch(self, texts):
        return [list(t) for t in texts]


def pairs_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return TokenPairs.encode(ListTokenizer(), [(rng.integers(3, 50, n).tolist(), rng.integers(3, 50, m).tolist())
                                               for n, m in lengths])


def test_reads_aligned_files_gz_and_tsv(tmp_path):
    (tmp_path / "a.en").write_text("A man.\nTwo dogs.\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.de.gz", "wt", encoding="utf-8") as f:
        f.write("Ein Mann.\nZwei Hunde.\n")
    assert read_parallel(tmp_path / "a.en", tmp_path / "a.de.gz") == [("A man.", "Ein Mann."), ("Two dogs.", "Zwei Hunde.")]
    (tmp_path / "p.tsv").write_text("A man.\tEin Mann.\n\nTwo dogs.\tZwei Hunde.\n", encoding="utf-8")
    assert read_parallel(tsv=tmp_path / "p.tsv") == [("A man.", "Ein Mann."), ("Two dogs.", "Zwei Hunde.")]


def test_misaligned_or_malformed_input_is_named(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(ValueError, match="3 lines but .* has 2"):
        read_parallel(tmp_path / "a.en", tmp_path / "a.de")
    (tmp_path / "bad.tsv").write_text("ok\tgut\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_parallel(tsv=tmp_path / "bad.tsv")
    (tmp_path / "latin1.en").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_parallel(tmp_path / "latin1.en", tmp_path / "latin1.en")


def test_token_pairs_round_trip(tmp_path):
    data = pairs_of([(3, 5), (7, 2), (1, 1)])
    data.save(tmp_path / "p.safetensors")
    back = TokenPairs.load(tmp_path / "p.safetensors")
    for i in range(len(data)):
        for x, y in zip(data[i], back[i]):
            assert x.tolist() == y.tolist()


def test_batches_cover_each_pair_once_per_epoch_within_budget():
    rng = np.random.default_rng(1)
    data = pairs_of([(int(rng.integers(1, 40)), int(rng.integers(1, 40))) for _ in range(500)])
    batches = TokenBatches(data, max_tokens=300, seed=3, extra=1)
    size = batches.size
    for epoch in range(2):
        seen = np.concatenate([batches.indices(epoch * len(batches) + i) for i in range(len(batches))])
        assert sorted(seen.tolist()) == list(range(500))
    for step in range(len(batches)):
        idx = batches.indices(step)
        assert len(idx) * size[idx].max() <= 300
    padded = sum(len(batches.indices(i)) * size[batches.indices(i)].max() for i in range(len(batches)))
    assert size.sum() / padded > 0.9  # length bucketing keeps padding under 10 %


def test_batches_are_a_pure_function_of_seed_and_step():
    data = pairs_of([(n % 17 + 1, n % 13 + 1) for n in range(200)])
    a, b = TokenBatches(data, 120, seed=5), TokenBatches(data, 120, seed=5)
    order = [7, 0, 350, 3, 7]  # any order, across epochs
    assert all(np.array_equal(a.indices(s), b.indices(s)) for s in order)
    c = TokenBatches(data, 120, seed=6)
    assert not all(np.array_equal(a.indices(s), c.indices(s)) for s in range(len(a)))


def test_budget_smaller_than_a_pair_is_refused():
    with pytest.raises(ValueError, match="max_tokens=10 is smaller than the longest pair"):
        TokenBatches(pairs_of([(30, 3)]), max_tokens=10)


def test_pad_batch():
    ids, mask = pad_batch([[5, 6], [7]], pad=0, prefix=1, suffix=2)
    assert ids.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, True, False]]
