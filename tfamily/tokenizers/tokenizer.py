"""`Tokenizer`: our thin, typed face on a Hugging Face `tokenizers.Tokenizer`.

The `tokenizers` library does the real work (training, fast encoding, the
tokenizer.json format). This wrapper only fixes the choices the rest of tfamily relies
on:

* ``decode(encode(s)) == s`` exactly for char, word and bpe: no normalizer, no cleanup of
  spaces, and decoders that concatenate (``Fuse``) or undo the byte mapping (``ByteLevel``).
  WordPiece is the exception by design (BERT's own choice): it normalises (lower-cases,
  strips accents, drops control characters) and forgets how words were spaced, so its
  decode gives the words back joined by single spaces.
* Encoding never adds BOS/EOS; the objective or generation code adds what it needs.
* Text that is not valid Unicode (a Python str holding lone surrogates U+D800-U+DFFF, as
  ``json.loads('"\\ud800"')`` or ``surrogateescape`` give) is encoded with each surrogate
  replaced by U+FFFD, one for one, so offsets and lengths still match the caller's text:
  a server must answer such a request, not fail on it. `clean_text` is that step.
* Special tokens have *roles* (pad, unk, bos, eos, ...) inferred from their names via
  ``special.py``, so GPT-2's lone ``<|endoftext|>`` is understood as bos, eos and unk.
* One saved file: the library's own tokenizer.json, readable by any HF tool.

Kinds we train::

    char  one token per Unicode code point ("\\n" and "\\r" included); unseen -> unk
    word  \\w+ runs, punctuation runs and whitespace runs are all tokens, so in-vocabulary
          text round-trips exactly; a run of CJK without spaces is ONE word ("中文字符")
    bpe   byte-level BPE (GPT-2 style); every byte is in the vocabulary, so any Unicode
          string round-trips and nothing is ever unk
    wordpiece
          BERT's tokenizer: BertNormalizer (optional lower-casing, accents stripped when
          lower-casing, CJK characters split apart so each is a word of its own),
          BertPreTokenizer (whitespace and punctuation), WordPiece pieces with "##"
          marking a continuation ("playing" -> "play", "##ing"); unseen words -> [UNK].
          Default specials [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4). A BERT ``vocab.txt``
          loads with `Tokenizer.from_vocab_txt`.

Loaded tokenizer.json files of other kinds keep the model's own name ("unigram", ...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from ..files import atomic_write_text
from .special import KNOWN_SPECIAL_TOKENS, SPECIAL_TOKENS, WORDPIECE_SPECIAL_TOKENS, check_special_tokens, infer_roles
from .textio import iter_text_chunks

KINDS = ("char", "word", "bpe", "wordpiece")

# One code point per token. "[\s\S]" rather than "." because "." skips newlines.
CHAR_PATTERN = r"[\s\S]"
# Words, punctuation runs, whitespace runs: together they cover every character.
WORD_PATTERN = r"\w+|[^\w\s]+|\s+"

DEFAULT_VOCAB_SIZE = {"char": None, "word": 32_000, "bpe": 8_192, "wordpiece": 8_192}
WORDPIECE_PREFIX = "##"  # marks a piece that continues the previous one inside a word
Segmenter = Callable[[str], Iterable[str]]  # text -> its words in order (e.g. jieba.cut)
UNLIMITED_VOCAB = 2**31 - 1  # what "no cap" means to the WordLevel trainer

TextSource = str | os.PathLike


class Tokenizer:
    """A trained or loaded tokenizer. Build with `train`, `load` or `from_str`."""

    def __init__(self, backend: HFTokenizer, kind: str | None = None):
        # Whatever a loaded file says, we never pad, truncate or add specials implicitly.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        spec = json.loads(backend.to_str())
        self.kind: str = kind or _infer_kind(spec)
        vocab = backend.get_vocab(with_added_tokens=True)
        # Embedding rows needed: ids may have gaps when added tokens sit past the model's.
        self.vocab_size: int = max(vocab.values()) + 1 if vocab else 0
        roles = infer_roles(_special_candidates(spec, vocab), declared_unk=_declared_unk(spec["model"]))
        wrap = _wrapping_specials(spec)
        if wrap and "cls" not in roles and "sep" not in roles and all(t in vocab for t in wrap):
            roles["cls"], roles["sep"] = wrap  # RoBERTa / XLM-R: "<s> A </s>" are its [CLS] and [SEP]
        self.special_ids: dict[str, int] = {role: vocab[tok] for role, tok in roles.items()}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        kind: str,
        texts_or_files: TextSource | Iterable[TextSource],
        vocab_size: int | None = None,
        special_tokens: Mapping[str, str] | None = None,
        min_frequency: int = 0,
        lowercase: bool | None = None,
    ) -> Tokenizer:
        """Train a ``kind`` tokenizer ("char", "word", "bpe" or "wordpiece") on texts and/or files.

        ``texts_or_files`` is one item or an iterable of items. A ``pathlib.Path`` (any
        ``os.PathLike``) is a UTF-8 file, streamed in chunks; a ``str`` naming an existing
        file is read as that file too (so CLI arguments work); any other ``str`` is text.
        ``vocab_size`` counts special tokens. For "char" it is an optional cap (default:
        every character seen); for "word" the most frequent words are kept (default
        32,000); for "bpe" it must leave room for the 256 bytes (default 8,192).
        For "wordpiece" it counts the "##" pieces too (default 8,192).
        ``special_tokens`` maps role -> token (default ``SPECIAL_TOKENS``, and
        ``WORDPIECE_SPECIAL_TOKENS`` = [PAD] [UNK] [CLS] [SEP] [MASK] for "wordpiece"); ids
        are given in its order, starting at 0. ``lowercase`` (wordpiece only, default
        True as in BERT "uncased") lower-cases and strips accents before splitting.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
        if lowercase is not None and kind != "wordpiece":
            raise ValueError(f"lowercase applies to the wordpiece kind only, not to {kind!r}")
        default_specials = WORDPIECE_SPECIAL_TOKENS if kind == "wordpiece" else SPECIAL_TOKENS
        specials = check_special_tokens(default_specials if special_tokens is None else special_tokens)
        if kind in ("char", "word", "wordpiece") and "unk" not in specials:
            raise ValueError(f"a {kind} tokenizer needs an 'unk' special token for unseen input")
        tokens = list(dict.fromkeys(specials.values()))  # one id per distinct string
        if vocab_size is None:
            vocab_size = DEFAULT_VOCAB_SIZE[kind]
        _check_vocab_size(kind, vocab_size, len(tokens))

        if kind == "wordpiece":
            backend, trainer = _build_wordpiece(tokens, vocab_size, min_frequency, specials,
                                                lowercase=True if lowercase is None else lowercase)
        else:
            backend, trainer = _BUILDERS[kind](tokens, vocab_size, min_frequency, specials.get("unk"))
        backend.train_from_iterator(_iter_texts(texts_or_files), trainer=trainer)
        if kind == "wordpiece":
            _add_bert_template(backend, backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]"))
        tok = cls(backend, kind)
        if tok.vocab_size <= len(tokens) and kind != "bpe":
            raise ValueError(f"no text to train the {kind} tokenizer on (the input was empty)")
        return tok

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS/EOS is added. Lone surrogates count as U+FFFD."""
        return self.backend.encode(clean_text(text), add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once (parallel inside the library)."""
        texts = [clean_text(t) for t in texts]
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_with_words(self, text: str, segmenter: Segmenter | None = None) -> tuple[list[int], list[int]]:
        """Token ids of ``text`` and, for each token, the index of the word it belongs to.

        Whole-word masking needs to know which tokens make one word: "playing" ->
        "play" "##ing" must be masked together. Words are the pre-tokenizer's pieces
        (for wordpiece: whitespace / punctuation splits, each CJK character alone; for
        byte-level bpe: a word with its leading space). Chinese words are runs of
        characters, which only a segmenter knows: pass one (``text -> words in order``,
        e.g. ``jieba.cut``) and each token's word is the segment its first character
        falls in. Word indices start at 0 and never decrease.
        """
        text = clean_text(text)  # same length: the segmenter's words still cover it
        enc = self.backend.encode(text, add_special_tokens=False)
        if segmenter is None:
            words = _number_words(enc.word_ids)
        else:
            words = _number_words(_segment_of_offsets(text, [start for start, _ in enc.offsets], segmenter))
        return enc.ids, words

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """The text of ``ids``, exactly: no spaces added or cleaned up."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # tensors, arrays, lists
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    def token_text(self, token_id: int) -> str:
        """One token as a person should see it (bytes of a partial character show as U+FFFD)."""
        self._check_id(token_id)
        # Decoding one id goes through the decoder, which turns byte-level symbols like
        # "Ġ" back into bytes and decodes them leniently; char/word tokens come back as is.
        return self.backend.decode([token_id], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        """The id of a token string (in the model's own notation), or None."""
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        """The raw vocabulary entry for an id (byte-level BPE shows e.g. "Ġthe")."""
        self._check_id(token_id)
        token = self.backend.id_to_token(token_id)
        if token is None:
            raise ValueError(f"id {token_id} is not in the vocabulary (a gap in the ids)")
        return token

    # ------------------------------------------------------------------ special tokens
    @property
    def pad_id(self) -> int | None:
        return self.special_ids.get("pad")

    @property
    def unk_id(self) -> int | None:
        return self.special_ids.get("unk")

    @property
    def bos_id(self) -> int | None:
        return self.special_ids.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_ids.get("eos")

    @property
    def cls_id(self) -> int | None:
        return self.special_ids.get("cls")

    @property
    def sep_id(self) -> int | None:
        return self.special_ids.get("sep")

    @property
    def mask_id(self) -> int | None:
        return self.special_ids.get("mask")

    # ------------------------------------------------------------------ persistence
    def to_str(self) -> str:
        """The tokenizer.json text, compact (embed it in a checkpoint)."""
        return self.backend.to_str()

    @classmethod
    def from_str(cls, text: str, where: str | os.PathLike | None = None) -> Tokenizer:
        """Rebuild from tokenizer.json text (ours or any HF one); ``where`` (the file it came
        from) is named in the error when the text is not a valid tokenizer."""
        return cls(_backend_from_str(text, str(where) if where is not None else "the given text"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write one tokenizer.json (into ``path`` itself, or inside it if it is a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        return atomic_write_text(path, self.backend.to_str(pretty=True))  # pretty: people read it

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer.json file (or a folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a tokenizer.json file (not UTF-8 text)") from None
        except OSError as e:  # a folder in its place, no permission, an I/O error
            raise ValueError(f"{path} cannot be read: {e.strerror or e}") from None
        return cls(_backend_from_str(text, str(path)))

    @classmethod
    def from_vocab_txt(cls, path: str | os.PathLike, lowercase: bool = True,
                       handle_chinese_chars: bool = True) -> Tokenizer:
        """A wordpiece tokenizer from a BERT ``vocab.txt`` (one token a line; line N is id N).

        This is what Google's BERT checkpoints and older HF folders ship instead of a
        tokenizer.json. ``lowercase`` must match the checkpoint (True for "uncased"
        models: tokenizer_config.json's ``do_lower_case``). The bracketed specials of the
        file ([PAD] [UNK] [CLS] [SEP] [MASK]) become special tokens with their ids kept.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.txt"
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} not found")
        vocab = _read_vocab_txt(path)
        unk = next((t for t in ("[UNK]", "<unk>") if t in vocab), None)
        if unk is None:
            raise ValueError(f"{path}: no [UNK] token in the vocabulary; a WordPiece vocabulary needs one")
        backend = HFTokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix=WORDPIECE_PREFIX,
                                               max_input_chars_per_word=100))
        _dress_wordpiece(backend, lowercase, handle_chinese_chars)
        specials = [t for role in WORDPIECE_SPECIAL_TOKENS for t in KNOWN_SPECIAL_TOKENS[role] if t in vocab]
        backend.add_special_tokens(specials)  # already in the vocabulary: ids unchanged
        _add_bert_template(backend, vocab.get("[CLS]"), vocab.get("[SEP]"))
        return cls(backend, "wordpiece")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, special_ids={self.special_ids})"

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is out of range [0, {self.vocab_size})")


train_tokenizer = Tokenizer.train

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate (U+D800-U+DFFF) replaced by U+FFFD.

    A Python str may hold surrogates that no UTF-8 text can (``"\\ud800"`` in JSON, bytes
    decoded with ``surrogateescape``); the `tokenizers` library refuses such a str with a
    bare TypeError. Replacing one code point by one keeps every offset valid. Two
    surrogates in a row become two U+FFFD: a str is code points, and a well-formed pair
    would already have been joined by whoever decoded it (``json.loads`` does).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected text (str), got {type(text).__name__}")
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


# ---------------------------------------------------------------------- builders
def _word_level(pattern: str, tokens: list[str], vocab_size: int | None, min_frequency: int, unk: str):
    """A WordLevel model over the pieces of ``pattern``, glued back together on decode."""
    backend = HFTokenizer(models.WordLevel(unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    backend.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size or UNLIMITED_VOCAB,
        min_frequency=min_frequency,
        special_tokens=tokens,
        show_progress=False,
    )
    return backend, trainer


def _build_char(tokens, vocab_size, min_frequency, unk):
    return _word_level(CHAR_PATTERN, tokens, vocab_size, min_frequency, unk)


def _build_word(tokens, vocab_size, min_frequency, unk):
    return _word_level(WORD_PATTERN, tokens, vocab_size, min_frequency, unk)


def _build_bpe(tokens, vocab_size, min_frequency, unk):
    """Byte-level BPE: all 256 byte symbols are in the alphabet, so no unk is ever needed."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return backend, trainer


def _build_wordpiece(tokens: list[str], vocab_size: int, min_frequency: int, specials: dict[str, str],
                     lowercase: bool):
    """BERT's pipeline: normalise, split on space / punctuation / CJK, then WordPiece."""
    backend = HFTokenizer(models.WordPiece(unk_token=specials["unk"], continuing_subword_prefix=WORDPIECE_PREFIX,
                                           max_input_chars_per_word=100))
    _dress_wordpiece(backend, lowercase, handle_chinese_chars=True)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=tokens,
        continuing_subword_prefix=WORDPIECE_PREFIX,
        show_progress=False,
    )
    return backend, trainer


def _dress_wordpiece(backend: HFTokenizer, lowercase: bool, handle_chinese_chars: bool) -> None:
    """Normalizer, pre-tokenizer and decoder of BERT's tokenizer, set on ``backend``.

    ``strip_accents=None`` follows ``lowercase``, as BERT's own BasicTokenizer does."""
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=handle_chinese_chars,
                                                    strip_accents=None, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=WORDPIECE_PREFIX, cleanup=True)


def _add_bert_template(backend: HFTokenizer, cls_id: int | None, sep_id: int | None) -> None:
    """The [CLS] A [SEP] B [SEP] template, so the saved tokenizer.json behaves like BERT's in
    other tools. tfamily itself never applies it: `encode` adds no specials."""
    if cls_id is None or sep_id is None:
        return
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])


def _read_vocab_txt(path: Path) -> dict[str, int]:
    """token -> id from a vocab.txt; a repeated token is an error (it would shift ids)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        token = token.rstrip("\r")
        if not token:
            raise ValueError(f"{path}, line {i + 1}: empty token")
        if token in vocab:
            raise ValueError(f"{path}, line {i + 1}: token {token!r} repeats line {vocab[token] + 1}")
        vocab[token] = i
    if not vocab:
        raise ValueError(f"{path} is empty")
    return vocab


_BUILDERS = {"char": _build_char, "word": _build_word, "bpe": _build_bpe}


def _check_vocab_size(kind: str, vocab_size: int | None, n_special: int) -> None:
    if vocab_size is None:
        return
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    floor = n_special + (256 if kind == "bpe" else 1)
    if vocab_size < floor:
        what = "the 256 byte symbols" if kind == "bpe" else "at least one token"
        raise ValueError(
            f"vocab_size {vocab_size} is too small for a {kind} tokenizer: it must hold "
            f"{n_special} special tokens plus {what} (>= {floor})"
        )


# ---------------------------------------------------------------------- words
def _number_words(word_ids: Sequence[int | None]) -> list[int]:
    """Renumber word ids 0, 1, 2, ... in order of appearance; a token without a word
    (None: an added token) is a word of its own."""
    out: list[int] = []
    last, current = object(), -1
    for w in word_ids:
        if w is None or w != last:
            current += 1
        out.append(current)
        last = w
    return out


def _segment_of_offsets(text: str, starts: Sequence[int], segmenter: Segmenter) -> list[int]:
    """For each token's first character (``starts``), the index of the segment holding it."""
    segment_of_char: list[int] = []
    for index, piece in enumerate(segmenter(text)):
        segment_of_char.extend([index] * len(piece))
    if len(segment_of_char) != len(text):
        raise ValueError(f"the segmenter's words cover {len(segment_of_char)} characters of a text of "
                         f"{len(text)}; it must return the text's words in order, nothing dropped or added")
    return [segment_of_char[s] if s < len(text) else -1 for s in starts]


# ---------------------------------------------------------------------- inputs
def _iter_texts(source: TextSource | Iterable[TextSource]) -> Iterator[str]:
    """Yield training texts, streaming files in chunks instead of reading them whole."""
    items = [source] if isinstance(source, (str, os.PathLike)) else source
    for item in items:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and _names_file(item)):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"training file {path} not found")
            for _, chunk in iter_text_chunks(path):
                yield chunk
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(f"expected text (str) or a file path (pathlib.Path), got {type(item).__name__}")


def _names_file(text: str) -> bool:
    """A short one-line string that is the path of an existing file."""
    return len(text) < 4096 and "\n" not in text and "\x00" not in text and os.path.isfile(text)


# ---------------------------------------------------------------------- loading
def _backend_from_str(text: str, where: str) -> HFTokenizer:
    """Parse tokenizer.json text with an error that says what was wrong and where."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not a tokenizer.json file (not JSON: {e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ValueError(f"{where} is not a tokenizer.json file (no 'model' object)")
    try:
        return HFTokenizer.from_str(text)
    except Exception as e:  # the library raises a bare Exception with serde's message
        reason = " ".join(str(e).split())  # one line
        raise ValueError(f"{where} is not a valid tokenizer.json file: {reason}") from None


def check_tokenizer_json(text: str, where: str | os.PathLike) -> int:
    """Check that ``text`` is a tokenizer.json the library can load (a ValueError naming
    ``where`` says what is wrong) and return the embedding rows its ids need (largest id + 1).

    Cheaper than ``Tokenizer.from_str`` (no role inference), for loaders that only check."""
    vocab = _backend_from_str(text, str(where)).get_vocab(with_added_tokens=True)
    return max(vocab.values()) + 1 if vocab else 0


def _special_candidates(spec: dict, vocab: dict[str, int]) -> list[str]:
    """Token strings that may carry a role: the added special tokens.

    Only a tokenizer with no special tokens at all (an old-style vocabulary) has its
    ordinary entries searched, since a learned BPE piece may happen to read "</s>".
    """
    specials = [t["content"] for t in spec.get("added_tokens") or [] if t.get("special")]
    return specials or list(vocab)


def _declared_unk(model: dict) -> str | None:
    """The unk token a model spec names itself (Unigram names it by id)."""
    if isinstance(model.get("unk_token"), str):
        return model["unk_token"]
    if model.get("type") == "Unigram" and isinstance(model.get("unk_id"), int):
        vocab = model.get("vocab") or []
        if 0 <= model["unk_id"] < len(vocab):
            return vocab[model["unk_id"]][0]
    return None


def _wrapping_specials(spec: dict) -> tuple[str, str] | None:
    """The two special tokens the post-processor puts around a single text ("<s> A </s>" for
    RoBERTa and XLM-R, "[CLS] A [SEP]" for BERT), or None. They are the cls and sep roles of a
    vocabulary whose names do not say so."""
    post = spec.get("post_processor") or {}
    if post.get("type") in ("RobertaProcessing", "BertProcessing"):
        return post["cls"][0], post["sep"][0]
    single = post.get("single") if post.get("type") == "TemplateProcessing" else None
    if single and len(single) == 3 and "SpecialToken" in single[0] and "Sequence" in single[1] \
            and "SpecialToken" in single[2]:
        return single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
    return None


def _pre_tokenizer_parts(spec: dict | None) -> list[dict]:
    """Flatten a (possibly nested Sequence) pre-tokenizer spec into its parts."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        return [p for sub in spec.get("pretokenizers", []) for p in _pre_tokenizer_parts(sub)]
    return [spec]


def _infer_kind(spec: dict) -> str:
    """Name the kind of a tokenizer.json from its model and pre-tokenizer."""
    model_type = spec["model"].get("type")
    parts = _pre_tokenizer_parts(spec.get("pre_tokenizer"))
    patterns = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if model_type == "WordLevel":
        return "char" if CHAR_PATTERN in patterns else "word"
    if model_type == "BPE":
        return "bpe"  # byte-level or not: token_text and decode go through the decoder anyway
    if model_type in ("WordPiece", "Unigram"):
        return model_type.lower()
    return str(model_type).lower()
