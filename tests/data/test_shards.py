import json
import tempfile
from unittest import mock
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfamily.data import TokenShards, WindowSampler, prepare_corpus, read_meta, token_dtype
from tfamily.tokenizers import Tokenizer
from tfamily.tokenizers import textio
from tfamily.tokenizers.textio import find_safe_cut, iter_text_chunks

# Lines start with a letter, a space or a CJK character, so the split point and the chunk
# cuts have to skip some newlines to find a safe one.
TEXT = "".join(
    f"SPEAKER {i}:\n  indented line {i}, with  spaces\n中文第{i}行。\n\n" for i in range(300)
)


@pytest.fixture(scope="module")
def char():
    return Tokenizer.train("char", [TEXT])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def read_all(shards: TokenShards) -> list[int]:
    return shards.window(0, len(shards)).tolist()


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_train_plus_val_decodes_to_the_text(char, corpus, tmp_path, chunk_bytes):
    info = prepare_corpus(corpus, char, tmp_path / "data", val_fraction=0.1, chunk_bytes=chunk_bytes)
    train, val = TokenShards(tmp_path / "data", "train"), TokenShards(tmp_path / "data", "val")
    assert len(train) == info.train_tokens and len(val) == info.val_tokens
    assert char.decode(read_all(train) + read_all(val)) == TEXT
    assert read_all(train) + read_all(val) == char.encode(TEXT)  # chunking changed nothing
    # val is the last ~10 % of the text and starts at a line boundary
    assert 0.08 < info.val_tokens / (info.train_tokens + info.val_tokens) < 0.12
    val_text = char.decode(read_all(val))
    assert TEXT.endswith(val_text) and TEXT[len(TEXT) - len(val_text) - 1] == "\n"


def test_meta_and_dtype(char, corpus, tmp_path):
    info = prepare_corpus(corpus, char, tmp_path / "data")
    meta = read_meta(tmp_path / "data")
    assert meta["dtype"] == info.dtype == "uint16"
    assert meta["vocab_size"] == char.vocab_size
    assert meta["val_fraction"] == 0.1 and meta["source"].endswith("corpus.txt")
    assert sum(s["tokens"] for s in meta["splits"]["train"]["shards"]) == info.train_tokens
    assert (tmp_path / "data" / "train_000.bin").stat().st_size == 2 * info.train_tokens
    assert Tokenizer.load(tmp_path / "data" / "tokenizer.json").encode(TEXT) == char.encode(TEXT)
    assert isinstance(TokenShards(tmp_path / "data", "train").shards[0], np.memmap)
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_uint32_for_large_vocabularies(corpus, tmp_path):
    class Wide:
        """A tokenizer stand-in whose ids need 32 bits."""
        vocab_size, kind = 70_000, "fake"

        def encode(self, text):
            return [69_999 - (ord(c) % 100) for c in text]

        def save(self, path):
            path.write_text("{}", encoding="utf-8")

    info = prepare_corpus(corpus, Wide(), tmp_path / "data")
    assert info.dtype == "uint32"
    train = TokenShards(tmp_path / "data", "train")
    assert train.window(0, 3).tolist() == Wide().encode(TEXT[:3])


def test_windows_cross_shard_boundaries(char, corpus, tmp_path):
    info = prepare_corpus(corpus, char, tmp_path / "data", shard_tokens=1000)
    train = TokenShards(tmp_path / "data", "train")
    assert info.train_shards == len(train.shards) > 3
    assert all(len(s) == 1000 for s in train.shards[:-1])
    everything = np.asarray(char.encode(TEXT))[: len(train)]
    for start, length in [(0, 1000), (990, 20), (1999, 2), (500, 2600), (len(train) - 7, 7), (3000, 0)]:
        window = train.window(start, length)
        assert window.dtype == np.int64
        assert window.tolist() == everything[start : start + length].tolist()
    with pytest.raises(IndexError, match="train split"):
        train.window(len(train) - 3, 4)


def test_preparing_again_replaces_old_shards(char, corpus, tmp_path):
    prepare_corpus(corpus, char, tmp_path / "data", shard_tokens=500)
    prepare_corpus(corpus, char, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").glob("*.bin")) == ["train_000.bin", "val_000.bin"]


def test_bad_utf8_names_file_and_offset(char, tmp_path):
    path = tmp_path / "latin1.txt"
    good = "hello\n" * 50
    path.write_bytes(good.encode() + "café\n".encode("latin-1") + b"more\n")
    with pytest.raises(ValueError, match=rf"latin1.txt is not valid UTF-8.*byte offset {len(good) + 3}"):
        prepare_corpus(path, char, tmp_path / "data", chunk_bytes=16)
    assert not (tmp_path / "data" / "meta.json").exists()


def test_failed_preparation_keeps_the_previous_one(char, corpus, tmp_path):
    prepare_corpus(corpus, char, tmp_path / "data")
    before = read_meta(tmp_path / "data")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n" * 100 + b"\xff\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        prepare_corpus(bad, char, tmp_path / "data")
    assert read_meta(tmp_path / "data") == before
    assert char.decode(read_all(TokenShards(tmp_path / "data", "train")))  # still readable


def test_empty_and_missing_files(char, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        prepare_corpus(empty, char, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        prepare_corpus(tmp_path / "missing.txt", char, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="prepare_corpus first"):
        TokenShards(tmp_path / "nothing-here", "train")


def test_text_chunks_join_to_the_text(corpus):
    chunks = list(iter_text_chunks(corpus, chunk_bytes=50))
    assert len(chunks) > 10
    assert "".join(text for _, text in chunks) == TEXT
    for offset, text in chunks:
        assert corpus.read_bytes()[offset : offset + len(text.encode())].decode() == text
        assert not text[-1:].isspace() or text.endswith("\n")


# ----------------------------------------------------------------- sampler
@pytest.fixture
def shards(char, corpus, tmp_path):
    prepare_corpus(corpus, char, tmp_path / "data", shard_tokens=700)
    return TokenShards(tmp_path / "data", "train")


def test_sampler_shapes_and_content(shards):
    batch = WindowSampler(shards, batch_size=4, seq_len=16, seed=0).batch(0)
    assert batch.shape == (4, 17) and batch.dtype == torch.long
    everything = read_all(shards)
    for row in batch.tolist():
        assert any(everything[s : s + 17] == row for s in range(len(everything) - 16))


def test_sampler_is_a_pure_function_of_seed_and_step(shards):
    a = WindowSampler(shards, batch_size=8, seq_len=32, seed=1)
    b = WindowSampler(shards, batch_size=8, seq_len=32, seed=1)
    for step in (7, 0, 7):  # order of calls does not matter: no hidden state
        assert torch.equal(a.batch(step), b.batch(step))
    assert not torch.equal(a.batch(0), a.batch(1))
    assert not torch.equal(a.batch(0), WindowSampler(shards, 8, 32, seed=2).batch(0))


def test_ranks_are_disjoint_slices_of_the_global_batch(shards):
    whole = WindowSampler(shards, batch_size=3 * 4, seq_len=8, seed=5)
    parts = [WindowSampler(shards, batch_size=3, seq_len=8, seed=5, rank=r, world_size=4) for r in range(4)]
    for step in (0, 9):
        assert torch.equal(torch.cat([p.batch(step) for p in parts]), whole.batch(step))
        starts = np.concatenate([p.starts(step) for p in parts])
        assert len(starts) == 12


def test_sampler_errors(shards, char, tmp_path):
    with pytest.raises(ValueError, match=rf"train split has {len(shards)} tokens"):
        WindowSampler(shards, batch_size=2, seq_len=len(shards), seed=0)
    WindowSampler(shards, batch_size=2, seq_len=len(shards) - 1, seed=0).batch(0)  # exactly fits
    with pytest.raises(ValueError, match="rank"):
        WindowSampler(shards, 2, 8, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="seed"):
        WindowSampler(shards, 2, 8, -1)
    small = tmp_path / "small.txt"
    small.write_text("a line\nb\n", encoding="utf-8")
    prepare_corpus(small, char, tmp_path / "small")
    with pytest.raises(ValueError, match="the val split has 2 tokens"):
        WindowSampler(TokenShards(tmp_path / "small", "val"), 1, 4, 0)
    assert json.loads((tmp_path / "small" / "meta.json").read_text())["splits"]["val"]["tokens"] == 2


# ----------------------------------------------------------------- chunking never changes ids
PIECES = ["a", "bc", " ", "  ", "\n", "\n\n", "中", "\u3000", "\t", "😀", "'s", ",", "\r\n", "1"]


def _visible(ch: str) -> bool:
    return (0x21 <= ord(ch) <= 0x7E) if ord(ch) < 0x80 else not ch.isspace()


def brute_force_first_cut(text: str, offset: int) -> int | None:
    """Byte offset of the first '\\n' flanked by visible characters, cut at or after offset."""
    for i, ch in enumerate(text):
        if ch == "\n" and 0 < i < len(text) - 1 and _visible(text[i - 1]) and _visible(text[i + 1]):
            cut = len(text[: i + 1].encode())
            if cut >= offset:
                return cut
    return None


@pytest.fixture(scope="module")
def small_tokenizers():
    corpus = "".join(PIECES) * 5 + "a b\nc d\n\n中 文\n"
    return [Tokenizer.train(k, [corpus], vocab_size=None if k == "char" else 300) for k in ("char", "word", "bpe")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=120), st.integers(8, 40), st.floats(0.05, 0.5))
def test_chunked_preparation_equals_whole_text_encoding(small_tokenizers, parts, chunk_bytes, val_fraction):
    text = "".join(parts)
    has_safe_cut = brute_force_first_cut(text, 1) is not None
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(textio, "MAX_PENDING_CHUNKS", 10**6):
        path = Path(tmp) / "t.txt"
        path.write_bytes(text.encode())
        offset = int(len(text.encode()) * 0.6)
        assert find_safe_cut(path, offset, chunk_bytes=chunk_bytes) == brute_force_first_cut(text, offset)
        for tok in small_tokenizers:
            if len(text.encode()) == 1:
                with pytest.raises(ValueError, match="too small"):
                    prepare_corpus(path, tok, Path(tmp) / "d", val_fraction=val_fraction)
                continue
            prepare_corpus(path, tok, Path(tmp) / "d", val_fraction=val_fraction, chunk_bytes=chunk_bytes)
            ids = read_all(TokenShards(Path(tmp) / "d", "train")) + read_all(TokenShards(Path(tmp) / "d", "val"))
            if tok.kind != "word":  # word text may hold out-of-vocabulary runs (-> unk)
                assert tok.decode(ids) == text
            if has_safe_cut:  # then every seam (chunks and the train/val split) is a safe cut
                assert ids == tok.encode(text), tok.kind
