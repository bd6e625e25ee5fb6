"""Folder-level reading and writing that every family shares."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tfamily.interop import InteropError, read_tokenizer_json, read_weights, write_folder

tokenizers = pytest.importorskip("tokenizers")

TEXTS = ["Hello world, this is a test.", "Another line of text here!", "  spaces  and\ttabs\nnewlines",
         "numbers 12345 and émojis 🙂"] * 10
SAMPLE = "Hello world<|endoftext|> numbers 999 🙂  x"


@pytest.fixture(scope="module")
def vocab_merges_folder(tmp_path_factory):
    """vocab.json + merges.txt, as GPT-2 folders older than tokenizer.json have them."""
    folder = tmp_path_factory.mktemp("bpe")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    bpe.save_model(str(folder))
    return folder


def test_vocab_and_merges_become_a_gpt2_tokenizer(vocab_merges_folder):
    text = read_tokenizer_json(vocab_merges_folder)
    tok = tokenizers.Tokenizer.from_str(text)
    ids = tok.encode(SAMPLE).ids
    assert tok.decode(ids, skip_special_tokens=False) == SAMPLE  # byte-level: lossless
    assert tok.token_to_id("<|endoftext|>") in ids  # matched whole, as a special token
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2Tokenizer.from_pretrained(vocab_merges_folder)
    assert ids == reference(SAMPLE)["input_ids"]


def test_tokenizer_json_is_preferred(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("")
    assert read_tokenizer_json(tmp_path) == '{"version": "1.0"}'


def test_no_tokenizer_is_none(tmp_path):
    assert read_tokenizer_json(tmp_path) is None


def test_write_folder_refuses_aliased_tensors(tmp_path):
    w = torch.randn(4, 3)
    with pytest.raises(InteropError, match="same tensor"):
        write_folder(tmp_path, {"model_type": "x"}, {"a": w, "b": w})
    assert not (tmp_path / "model.safetensors").exists()


def test_write_folder_makes_views_contiguous_and_owned(tmp_path):
    big = torch.randn(6, 4)
    sd = {"top": big[:3], "t": big[3:].t()}  # a slice and a transposed view of one buffer
    write_folder(tmp_path, {"model_type": "x"}, sd, tokenizer_json='{"a": 1}')
    back = load_file(tmp_path / "model.safetensors")
    torch.testing.assert_close(back["top"], big[:3])
    torch.testing.assert_close(back["t"], big[3:].t())
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_write_folder_rejects_bad_tokenizer_json_before_writing(tmp_path):
    with pytest.raises(InteropError, match="tokenizer_json"):
        write_folder(tmp_path, {}, {"a": torch.zeros(1)}, tokenizer_json="not json")
    assert list(tmp_path.iterdir()) == []


def test_shard_index_cannot_point_outside_the_folder(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../evil.safetensors"}}))
    with pytest.raises(InteropError, match="plain file name"):
        read_weights(tmp_path)
