import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tfamily.tokenizers import KNOWN_SPECIAL_TOKENS, SPECIAL_TOKENS, Tokenizer, train_tokenizer
from tfamily.tokenizers.special import infer_roles

ENGLISH = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
)
CHINESE = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
MIXED = ENGLISH + CHINESE + "naïve café — emoji 😀🎉 and tabs\tand\r\nwindows lines\n"


@pytest.fixture(scope="module")
def bpe():
    """One byte-level BPE for the whole module: training is the slow part."""
    return Tokenizer.train("bpe", [MIXED] * 20, vocab_size=400)


@pytest.fixture(scope="module")
def char():
    return Tokenizer.train("char", [MIXED])


@pytest.fixture(scope="module")
def word():
    return Tokenizer.train("word", [MIXED], vocab_size=1000)


# ----------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("text", [ENGLISH, CHINESE, MIXED], ids=["english", "chinese", "mixed"])
def test_round_trip_in_vocabulary(kind, text, request):
    tok = request.getfixturevalue(kind)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in ids


def test_char_is_one_token_per_character(char):
    ids = char.encode(CHINESE)
    assert len(ids) == len(CHINESE)
    assert [char.token_text(i) for i in ids] == list(CHINESE)
    assert char.token_to_id("\n") is not None and char.token_to_id("\r") is not None


def test_word_tokens_cover_words_punctuation_and_space(word):
    pieces = [word.token_text(i) for i in word.encode("Speak, speak.\n\n")]
    assert pieces == ["Speak", ",", " ", "speak", ".", "\n\n"]
    # A run of CJK without spaces is one "word": \w+ matches it whole.
    assert [word.token_text(i) for i in word.encode("床前明月光，")] == ["床前明月光", "，"]


def test_encode_batch_matches_encode(bpe):
    texts = [ENGLISH, CHINESE, "", "😀"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]


def test_no_bos_eos_added(bpe, char):
    for tok in (bpe, char):
        assert tok.encode("") == []
        ids = tok.encode("hear")
        assert tok.bos_id not in ids and tok.eos_id not in ids


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_unicode(bpe, text):
    # st.text() draws any code point but surrogates: emoji, controls, NUL, combining marks.
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_token_text_is_readable(bpe):
    ids = bpe.encode("\U0001d11e")  # 𝄞, never seen: 4 byte tokens, none a whole character
    assert len(ids) == 4
    assert [bpe.token_text(i) for i in ids] == ["\ufffd"] * 4
    ids = bpe.encode(" speak")
    assert "".join(bpe.token_text(i) for i in ids) == " speak"
    assert bpe.id_to_token(ids[0]).startswith("Ġ")  # the raw byte-level symbol


# ----------------------------------------------------------------- unk
def test_char_unknown_becomes_unk(char):
    ids = char.encode("a\u2603b")  # snowman never seen in training
    assert ids[1] == char.unk_id
    assert char.decode(ids) == "a<unk>b"
    assert char.decode(ids, skip_special=True) == "ab"


def test_word_vocab_cap_and_unk():
    tok = Tokenizer.train("word", ["the cat the dog the cat"], vocab_size=len(SPECIAL_TOKENS) + 3)
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 3
    ids = tok.encode("the dog")
    # kept: " " (5x), "the" (3x), "cat" (2x); "dog" (1x) did not make the cut
    assert tok.decode(ids) == "the <unk>"
    assert tok.encode("the cat") == [tok.token_to_id("the"), tok.token_to_id(" "), tok.token_to_id("cat")]


def test_char_vocab_size_is_a_cap():
    tok = Tokenizer.train("char", ["aaaabbbc"], vocab_size=len(SPECIAL_TOKENS) + 2)
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 2
    assert tok.encode("c") == [tok.unk_id]


# ----------------------------------------------------------------- specials
def test_default_special_ids_and_roles(char, bpe):
    for tok in (char, bpe):
        assert tok.special_ids == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
        assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
        assert tok.id_to_token(3) == SPECIAL_TOKENS["eos"] == "<|endoftext|>"
    # A special token in the text encodes as the special id and decodes back.
    ids = bpe.encode("end<|endoftext|>")
    assert ids[-1] == bpe.eos_id
    assert bpe.decode(ids) == "end<|endoftext|>" and bpe.decode(ids, skip_special=True) == "end"


def test_custom_special_tokens():
    tok = Tokenizer.train("bpe", ["some text"], vocab_size=300, special_tokens={"eos": "<|endoftext|>"})
    assert tok.eos_id == 0 and tok.pad_id is None
    # GPT-2 convention: the lone <|endoftext|> is also bos and unk.
    assert tok.bos_id == 0 and tok.unk_id == 0


def test_unrecognisable_special_token_is_refused():
    with pytest.raises(ValueError, match="would not be recognised"):
        Tokenizer.train("char", ["abc"], special_tokens={"unk": "<unk>", "bos": "<START>"})
    with pytest.raises(ValueError, match="unknown role"):
        Tokenizer.train("char", ["abc"], special_tokens={"unk": "<unk>", "boss": "<s>"})
    with pytest.raises(ValueError, match="needs an 'unk'"):
        Tokenizer.train("word", ["abc"], special_tokens={"eos": "</s>"})


def test_role_inference_table():
    assert infer_roles(["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]) == {
        "pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    assert infer_roles(["<s>", "</s>", "<unk>", "<pad>"]) == {
        "pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}
    assert set(KNOWN_SPECIAL_TOKENS) >= {"pad", "unk", "bos", "eos", "cls", "sep", "mask"}


# ----------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_identical(kind, request, tmp_path):
    tok = request.getfixturevalue(kind)
    path = tok.save(tmp_path / "tok" / "tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]
    again = Tokenizer.load(path)
    assert again.kind == kind
    assert again.vocab_size == tok.vocab_size and again.special_ids == tok.special_ids
    assert again.encode(MIXED) == tok.encode(MIXED)
    assert Tokenizer.from_str(tok.to_str()).encode(MIXED) == tok.encode(MIXED)
    assert Tokenizer.load(path.parent).encode(CHINESE) == tok.encode(CHINESE)  # a folder works too


def test_train_from_files_streams(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(MIXED * 3, encoding="utf-8")
    from_path = Tokenizer.train("word", [corpus], vocab_size=500)
    from_str_path = train_tokenizer("word", str(corpus), vocab_size=500)  # a str naming a file
    from_text = Tokenizer.train("word", [MIXED * 3], vocab_size=500)
    assert from_path.to_str() == from_str_path.to_str() == from_text.to_str()
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer.train("char", [tmp_path / "missing.txt"])


def gpt2_style_json() -> str:
    """A tiny stand-in for GPT-2's tokenizer.json: byte-level BPE, <|endoftext|> only."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([ENGLISH] * 5, trainer=trainer)
    backend.add_special_tokens(["<|endoftext|>"])  # GPT-2 has it last, id 50256
    return backend.to_str()


def test_load_gpt2_style_infers_roles(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(gpt2_style_json(), encoding="utf-8")
    tok = Tokenizer.load(path)
    eot = tok.token_to_id("<|endoftext|>")
    assert tok.kind == "bpe"
    assert eot == tok.vocab_size - 1
    assert tok.eos_id == tok.bos_id == tok.unk_id == eot
    assert tok.pad_id is None
    assert tok.decode(tok.encode("Speak, 言 speak.")) == "Speak, 言 speak."


def test_loaded_post_processor_adds_nothing():
    spec = json.loads(gpt2_style_json())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [300], "tokens": ["<|endoftext|>"]}},
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    assert tok.eos_id not in tok.encode("hear me")


# ----------------------------------------------------------------- errors
def test_clear_errors(tmp_path, char):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        Tokenizer.load(bad)
    bad.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        Tokenizer.load(bad)
    bad.write_text('{"model": {"type": "Nonsense"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        Tokenizer.load(bad)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        Tokenizer.train("sentencepiece", ["abc"])
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train("bpe", ["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train("char", [""])
    with pytest.raises(ValueError, match="out of range"):
        char.token_text(char.vocab_size)


def test_repr_and_len(char):
    assert len(char) == char.vocab_size
    assert "char" in repr(char)


def test_roles_come_from_special_tokens_not_ordinary_pieces():
    """A learned piece that happens to read "</s>" is text, not an end-of-sequence."""
    spec = json.loads(gpt2_style_json())
    vocab = spec["model"]["vocab"]
    vocab["</s>"] = max(vocab.values()) + 1
    for t in spec["added_tokens"]:
        t["id"] = max(vocab.values()) + 1
    tok = Tokenizer.from_str(json.dumps(spec))
    assert tok.eos_id == tok.token_to_id("<|endoftext|>") != tok.token_to_id("</s>")


def test_decode_accepts_tensors_and_arrays(char):
    import numpy as np
    import torch

    ids = char.encode(ENGLISH)
    assert char.decode(torch.tensor(ids)) == char.decode(np.array(ids)) == ENGLISH
