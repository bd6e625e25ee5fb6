"""The BERT-style wordpiece kind, vocab.txt loading and word ids for whole-word masking."""

import pytest

from tfamily.tokenizers import WORDPIECE_SPECIAL_TOKENS, Tokenizer

TEXT = [
    "The quick brown fox jumps over the lazy dog. Playing players played plays.\n",
    "Naïve café owners are playing in Zürich.\n",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n",
] * 30


@pytest.fixture(scope="module")
def wp():
    return Tokenizer.train("wordpiece", TEXT, vocab_size=150)


def pieces(tok, text):
    return [tok.id_to_token(i) for i in tok.encode(text)]


def test_default_specials_are_bert_names_with_pad_zero(wp):
    assert list(WORDPIECE_SPECIAL_TOKENS.values()) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id) == (0, 1, 2, 3, 4)
    assert wp.kind == "wordpiece" and wp.bos_id is None


def test_pieces_continue_with_hashes_and_unseen_characters_are_unk(wp):
    out = pieces(wp, "unplayed")
    assert out[0] == "u" or not out[0].startswith("##")
    assert all(p.startswith("##") for p in out[1:]) and len(out) > 1
    assert pieces(wp, "€") == ["[UNK]"]


def test_lowercases_strips_accents_and_splits_cjk(wp):
    assert pieces(wp, "THE") == pieces(wp, "the")
    assert wp.encode("Naïve café") == wp.encode("naive cafe")
    assert pieces(wp, "明月光") == ["明", "月", "光"]  # each CJK character is a word of its own
    assert wp.decode(wp.encode("The Lazy dog.")) == "the lazy dog."


def test_cased_wordpiece_keeps_case():
    tok = Tokenizer.train("wordpiece", TEXT, vocab_size=150, lowercase=False)
    assert tok.encode("The") != tok.encode("the")


def test_lowercase_is_refused_for_other_kinds():
    with pytest.raises(ValueError, match="lowercase applies to the wordpiece kind only"):
        Tokenizer.train("char", TEXT, lowercase=True)


def test_save_load_keeps_kind_roles_and_ids(wp, tmp_path):
    again = Tokenizer.load(wp.save(tmp_path))
    assert again.kind == "wordpiece" and again.special_ids == wp.special_ids
    for line in TEXT[:3]:
        assert again.encode(line) == wp.encode(line)


def test_saved_file_has_the_bert_pair_template(wp):
    """Other tools applying the post-processor get [CLS] A [SEP] B [SEP] with segment ids."""
    enc = wp.backend.encode("the dog", "the fox", add_special_tokens=True)
    assert enc.ids[0] == wp.cls_id and enc.ids[-1] == wp.sep_id
    assert enc.type_ids == [0, 0, 0, 0, 1, 1, 1]


# ------------------------------------------------------------------ vocab.txt
VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "play", "##ing", "##s", "runs",
         ",", ".", "!", "中", "文", "un", "##aff", "##able", "a", "##b"]


@pytest.fixture()
def vocab_txt(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def test_vocab_txt_loads_with_bert_ids(vocab_txt):
    tok = Tokenizer.from_vocab_txt(vocab_txt)
    assert tok.kind == "wordpiece" and tok.vocab_size == len(VOCAB)
    assert tok.special_ids == {"pad": 0, "unk": 2, "cls": 3, "sep": 4, "mask": 5}
    assert pieces(tok, "The dog, playing! unaffable 中文 zzz") == [
        "the", "dog", ",", "play", "##ing", "!", "un", "##aff", "##able", "中", "文", "[UNK]"]
    assert Tokenizer.from_vocab_txt(vocab_txt.parent).vocab_size == len(VOCAB)  # a folder works too


def test_vocab_txt_matches_transformers_bert_tokenizer(vocab_txt):
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertTokenizer(str(vocab_txt), do_lower_case=True)
    tok = Tokenizer.from_vocab_txt(vocab_txt)
    for text in ["The Dog runs.", "PLAYING dogs, un-aff-able", "中文 the ab abb", "Dög  plays\tthe\n dog"]:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text


def test_vocab_txt_errors_name_file_and_line(tmp_path):
    dup = tmp_path / "dup.txt"
    dup.write_text("[UNK]\nthe\ndog\nthe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup.txt, line 4: token 'the' repeats line 2"):
        Tokenizer.from_vocab_txt(dup)
    no_unk = tmp_path / "nounk.txt"
    no_unk.write_text("the\ndog\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no \\[UNK\\] token"):
        Tokenizer.from_vocab_txt(no_unk)
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_vocab_txt(tmp_path / "missing.txt")


# ------------------------------------------------------------------ word ids
def test_word_ids_group_continuation_pieces(vocab_txt):
    tok = Tokenizer.from_vocab_txt(vocab_txt)
    ids, words = tok.encode_with_words("the dog playing, unaffable")
    assert [tok.id_to_token(i) for i in ids] == ["the", "dog", "play", "##ing", ",", "un", "##aff", "##able"]
    assert words == [0, 1, 2, 2, 3, 4, 4, 4]
    assert ids == tok.encode("the dog playing, unaffable")


def test_word_ids_from_a_segmenter_join_chinese_characters(wp):
    text = "举头望明月，低头思故乡。"
    segments = ["举头", "望", "明月", "，", "低头", "思", "故乡", "。"]
    ids, words = wp.encode_with_words(text, segmenter=lambda t: segments)
    assert [wp.id_to_token(i) for i in ids] == list(text)
    assert words == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    _, per_char = wp.encode_with_words(text)  # without a segmenter each character is a word
    assert per_char == list(range(len(text)))


def test_segmenter_that_drops_text_is_an_error(wp):
    with pytest.raises(ValueError, match="segmenter's words cover 2 characters of a text of 4"):
        wp.encode_with_words("明月故乡", segmenter=lambda t: ["明月"])


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_word_ids_for_other_kinds_are_monotone(kind):
    tok = Tokenizer.train(kind, TEXT[:2], vocab_size=300 if kind == "bpe" else None)
    ids, words = tok.encode_with_words("The quick brown fox")
    assert ids == tok.encode("The quick brown fox") and len(words) == len(ids)
    assert words[0] == 0 and all(b - a in (0, 1) for a, b in zip(words, words[1:]))
