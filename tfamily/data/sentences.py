"""Text -> sentences with document ids -> sentence-pair batches for BERT pretraining.

    info = prepare_sentences("corpus.txt", tokenizer, "runs/x/data", val_fraction=0.1)
    train = SentencePairSampler(Sentences.load(info.train_path), batch_size=32, max_len=128, seed=0)
    raw = train.batch(step)            # SentencePairs: segments A and B, NSP labels, mask seeds
    batch = MaskedLMObjective.from_tokenizer(tokenizer).prepare(raw)

The text format is BERT's: one sentence a line, a blank line between documents. Each
sentence is stored as token ids in one flat array with offsets, next to the word index of
every token (for whole-word masking) and the document of every sentence::

    ids      (N_tokens,) int32     all sentences' token ids, one after another
    words    (N_tokens,) int32     word index of each token within its sentence
    offsets  (n + 1,) int64        sentence i is ids[offsets[i]:offsets[i + 1]]
    docs     (n,) int32            document index of each sentence (non-decreasing)

A training row is built as in BERT's create_pretraining_data: segment A is one or more
consecutive sentences of a document, and segment B is either the text that really
follows A (NSP label 0, "is next") or, half of the time, sentences taken from a random
other document (label 1, "random"), the labels of Hugging Face's BertForPreTraining. A
corpus of a single document draws the random B from far away in it instead.
``[CLS] A [SEP] B [SEP]`` always fits ``max_len``: the longer segment is cut first.

``batch(step)`` is a pure function of (seed, step) and so is the masking: every row
carries its own mask seed, drawn here, so `MaskedLMObjective.prepare` chooses the same
masked positions on a resumed run, on any split into micro-batches or ranks, and for
validation batches at every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..tokenizers.tokenizer import _number_words

FORMAT = "tfamily-sentences"
SPECIALS_PER_PAIR = 3  # [CLS] A [SEP] B [SEP]
ENCODE_LINES = 10_000  # lines tokenised per call: bounded memory, parallel encoding inside the library


# ---------------------------------------------------------------------- storage
@dataclass
class Sentences:
    """Tokenised sentences stored flat (see the module docstring for the arrays)."""

    ids: np.ndarray  # (N_tokens,) int32
    words: np.ndarray  # (N_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64
    docs: np.ndarray  # (n,) int32

    def __post_init__(self):
        if len(self.offsets) != len(self.docs) + 1:
            raise ValueError(f"offsets has {len(self.offsets)} entries for {len(self.docs)} sentences (want n + 1)")
        if len(self.ids) != len(self.words) or (len(self.offsets) and self.offsets[-1] != len(self.ids)):
            raise ValueError("ids, words and offsets disagree on the number of tokens")

    def __len__(self) -> int:
        return len(self.docs)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_docs(self) -> int:
        return len(np.unique(self.docs))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (n,)

    def tokens(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and word ids of sentences first..last-1 joined: (L,) int64 each. Word ids
        are made unique across the sentences, so a word never spans two sentences."""
        lo, hi = int(self.offsets[first]), int(self.offsets[last])
        ids = self.ids[lo:hi].astype(np.int64)
        words = self.words[lo:hi].astype(np.int64)
        # sentence k of the run adds the word count of sentences before it to its word ids
        sent_len = np.diff(self.offsets[first:last + 1])  # (k,)
        sent_words = self.words[self.offsets[first + 1:last + 1] - 1].astype(np.int64) + 1  # (k,) words in each
        shift = np.concatenate([[0], np.cumsum(sent_words)[:-1]])
        return ids, words + np.repeat(shift, sent_len)

    def select(self, first: int, last: int) -> "Sentences":
        """Sentences first..last-1 as their own store (documents renumbered from 0)."""
        lo, hi = int(self.offsets[first]), int(self.offsets[last])
        docs = self.docs[first:last]
        return Sentences(self.ids[lo:hi].copy(), self.words[lo:hi].copy(), self.offsets[first:last + 1] - lo,
                         (docs - (docs[0] if len(docs) else 0)).astype(np.int32))

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"ids": self.ids, "words": self.words, "offsets": self.offsets, "docs": self.docs}, str(tmp),
                  metadata={"format": FORMAT, **(metadata or {})})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Sentences":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sentence file {path} not found")
        t = load_file(str(path))
        missing = {"ids", "words", "offsets", "docs"} - set(t)
        if missing:
            raise ValueError(f"{path} is not a tfamily sentence file (missing {', '.join(sorted(missing))})")
        return cls(t["ids"], t["words"], t["offsets"], t["docs"])


# ---------------------------------------------------------------------- reading text
def iter_sentences(path: str | Path) -> Iterator[tuple[int, int, str]]:
    """Yield ``(line number, document index, sentence)`` for each non-blank line of a UTF-8
    file; one or more blank lines start a new document. Streams: memory stays one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} not found")
    doc, seen_text, in_gap = 0, False, False
    with open(path, "rb") as f:  # bytes, decoded line by line, so a bad byte is pinned to its line
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not text:
                in_gap = seen_text
                continue
            if in_gap:
                doc, in_gap = doc + 1, False
            seen_text = True
            yield line_no, doc, text


def encode_sentences(tokenizer, lines: Iterable[tuple[int, str]],
                     segmenter: Callable[[str], Iterable[str]] | None = None) -> Sentences:
    """Tokenise ``(document, sentence)`` items into a store, ``ENCODE_LINES`` at a time.
    Sentences that give no tokens (e.g. only control characters) are dropped."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    batch: list[tuple[int, str]] = []
    for item in lines:
        batch.append(item)
        if len(batch) == ENCODE_LINES:
            parts.append(_encode_block(tokenizer, batch, segmenter))
            batch = []
    if batch:
        parts.append(_encode_block(tokenizer, batch, segmenter))
    if not parts:
        return Sentences(*(np.zeros(0, np.int32),) * 2, np.zeros(1, np.int64), np.zeros(0, np.int32))
    lengths = np.concatenate([p[2] for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return Sentences(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), offsets,
                     np.concatenate([p[3] for p in parts]))


def _encode_block(tokenizer, block: list[tuple[int, str]], segmenter):
    """ids (N,), words (N,), lengths (k,), docs (k,) of the non-empty sentences of ``block``."""
    if segmenter is None:
        encs = tokenizer.backend.encode_batch([text for _, text in block], add_special_tokens=False)
        pairs = [(e.ids, _number_words(e.word_ids)) for e in encs]
    else:
        pairs = [tokenizer.encode_with_words(text, segmenter) for _, text in block]
    kept = [(ids, words, doc) for (ids, words), (doc, _) in zip(pairs, block) if ids]
    ids = np.fromiter((i for ids, _, _ in kept for i in ids), dtype=np.int32)
    words = np.fromiter((w for _, ws, _ in kept for w in ws), dtype=np.int32)
    lengths = np.array([len(ids) for ids, _, _ in kept], dtype=np.int64)
    docs = np.array([doc for _, _, doc in kept], dtype=np.int32)
    return ids, words, lengths, docs


# ---------------------------------------------------------------------- preparing
@dataclass(frozen=True)
class SentencesInfo:
    """What `prepare_sentences` wrote."""

    train_path: Path
    val_path: Path | None
    train_sentences: int
    val_sentences: int
    train_docs: int
    val_docs: int
    train_tokens: int
    val_tokens: int


def prepare_sentences(text_path: str | Path, tokenizer, out_dir: str | Path, val_fraction: float = 0.1,
                      segmenter: Callable[[str], Iterable[str]] | None = None) -> SentencesInfo:
    """Tokenise a text file (one sentence a line, blank line between documents) into
    ``out_dir/train.sentences.safetensors`` and ``val.sentences.safetensors`` (with the
    tokenizer.json that made them). The text is streamed; the token arrays are built in
    memory (8 bytes a token) and written once.

    The last documents, about ``val_fraction`` of the sentences, are held out whole, so
    no validation pair shares a document with training. A single-document corpus is cut
    at a sentence instead. ``segmenter`` (text -> words, e.g. ``jieba.cut``) defines the
    words of Chinese text for whole-word masking; without it the tokenizer's own words are
    used (wordpiece: a CJK character is a word).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    text_path, out_dir = Path(text_path), Path(out_dir)
    store = encode_sentences(tokenizer, ((doc, text) for _, doc, text in iter_sentences(text_path)), segmenter)
    if len(store) < 2:
        raise ValueError(f"{text_path} has {len(store)} non-empty line(s); sentence pairs need at least 2")
    cut = split_point(store.docs, val_fraction)
    train, val = store.select(0, cut), store.select(cut, len(store))
    meta = {"source": str(text_path), "vocab_size": str(tokenizer.vocab_size), "tokenizer_kind": tokenizer.kind}
    train_path = train.save(out_dir / "train.sentences.safetensors", {**meta, "split": "train"})
    val_path = val.save(out_dir / "val.sentences.safetensors", {**meta, "split": "val"}) if len(val) else None
    tokenizer.save(out_dir / "tokenizer.json")  # the ids can always be decoded again
    return SentencesInfo(train_path, val_path, len(train), len(val), train.n_docs, val.n_docs if len(val) else 0,
                         train.n_tokens, val.n_tokens)


def split_point(docs: np.ndarray, val_fraction: float) -> int:
    """The first validation sentence: a document boundary near (1 - val_fraction) of the
    sentences, or (one document only) that sentence itself. 0 < cut <= n."""
    n = len(docs)
    if val_fraction == 0 or n < 2:
        return n
    target = min(max(int(round(n * (1 - val_fraction))), 1), n - 1)
    starts = np.flatnonzero(np.diff(docs)) + 1  # (n_docs - 1,) first sentence of each later document
    if len(starts) == 0:
        return target
    return int(starts[np.argmin(np.abs(starts - target))])


# ---------------------------------------------------------------------- sampling
@dataclass
class SentencePairs:
    """A raw batch of sentence pairs: what `MaskedLMObjective.prepare` takes.

    Sliceable (``pairs[i:j]``) and sized, so the trainer can cut it into micro-batches;
    each row keeps its own mask seed, so the masking of a row never depends on the cut.
    """

    a: list[np.ndarray]  # B x (La,) int64 token ids of segment A
    b: list[np.ndarray]  # B x (Lb,) int64 token ids of segment B
    a_words: list[np.ndarray]  # B x (La,) int64 word index of each token (unique within the row)
    b_words: list[np.ndarray]  # B x (Lb,) int64, numbered after A's words
    nsp_labels: np.ndarray  # (B,) int64: 0 = B really follows A, 1 = B is random
    mask_seeds: np.ndarray  # (B,) uint64: seeds of each row's masking

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: slice) -> "SentencePairs":
        if not isinstance(index, slice):
            raise TypeError("index a SentencePairs batch with a slice (rows i:j)")
        return SentencePairs(self.a[index], self.b[index], self.a_words[index], self.b_words[index],
                             self.nsp_labels[index], self.mask_seeds[index])


class SentencePairSampler:
    """Random BERT pretraining pairs, a pure function of (seed, step).

    Under data parallelism every rank draws rows ``rank * batch_size ... (rank + 1) *
    batch_size`` of the same global batch; each row has its own generator seeded from
    (seed, step, row), so a rank computes only its own rows.

    ``random_next`` is the share of rows whose B is random (BERT: 0.5). ``short_seq_prob``
    is the share of rows given a shorter random length budget (BERT: 0.1), so the model
    also sees the short inputs of fine-tuning.
    """

    def __init__(self, sentences: Sentences, batch_size: int, max_len: int, seed: int, rank: int = 0,
                 world_size: int = 1, random_next: float = 0.5, short_seq_prob: float = 0.1):
        for name, value in (("batch_size", batch_size), ("max_len", max_len), ("world_size", world_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if max_len < SPECIALS_PER_PAIR + 2:
            raise ValueError(f"max_len must leave room for [CLS] A [SEP] B [SEP] (>= 5), got {max_len}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        for name, value in (("random_next", random_next), ("short_seq_prob", short_seq_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.sentences, self.batch_size, self.max_len, self.seed = sentences, batch_size, max_len, seed
        self.rank, self.world_size = rank, world_size
        self.random_next, self.short_seq_prob = random_next, short_seq_prob
        docs = sentences.docs
        n = len(docs)
        # A pair starts at a sentence that has a successor in its document.
        self.starts = np.flatnonzero(docs[:-1] == docs[1:]) if n > 1 else np.zeros(0, np.int64)  # (n_starts,)
        if len(self.starts) == 0:
            raise ValueError("no document has two sentences, so no sentence has a real next sentence; "
                             "give one sentence a line with documents separated by blank lines")
        # document of each sentence -> its [first, end) sentence range
        first_of_doc = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        self.doc_first = np.repeat(first_of_doc, np.diff(np.r_[first_of_doc, n]))  # (n,)
        self.doc_end = np.repeat(np.r_[first_of_doc[1:], n], np.diff(np.r_[first_of_doc, n]))  # (n,)
        self.single_doc = len(first_of_doc) == 1
        self.lengths = sentences.lengths()  # (n,)

    def batch(self, step: int) -> SentencePairs:
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        rows = [self._row(int(step), self.rank * self.batch_size + r) for r in range(self.batch_size)]
        a, aw, b, bw, labels, seeds = zip(*rows)
        return SentencePairs(list(a), list(b), list(aw), list(bw), np.array(labels, dtype=np.int64),
                             np.array(seeds, dtype=np.uint64))

    # -------------------------------------------------------------- one row
    def _row(self, step: int, row: int):
        rng = np.random.default_rng([self.seed, step, row])
        mask_seed = int(rng.integers(0, 2**63))
        budget = self.max_len - SPECIALS_PER_PAIR  # tokens left for A and B
        if rng.random() < self.short_seq_prob:
            budget = int(rng.integers(2, budget + 1))
        i = int(self.starts[rng.integers(len(self.starts))])
        end = self._take(i, budget, self.doc_end[i], at_least=2)  # chunk i..end-1, within the document
        a_end = int(rng.integers(i + 1, end))  # A = i..a_end-1, the real next text = a_end..end-1
        label = int(rng.random() < self.random_next)
        if label:
            other = self._random_sentence(rng, i, end)
            if other is None:
                label = 0  # a tiny single-document corpus: nothing is far from A
            else:
                b_first, stop = other
                a_len = int(self.lengths[i:a_end].sum())
                b_end = self._take(b_first, max(budget - a_len, 1), stop, at_least=1)
        if not label:
            b_first, b_end = a_end, end
        a_ids, a_words = self.sentences.tokens(i, a_end)
        b_ids, b_words = self.sentences.tokens(b_first, b_end)
        a_ids, a_words, b_ids, b_words = _truncate_pair(a_ids, a_words, b_ids, b_words, budget, rng)
        b_words = b_words + (a_words.max() + 1 if len(a_words) else 0)  # B's words come after A's
        return a_ids, a_words, b_ids, b_words, label, mask_seed

    def _take(self, first: int, budget: int, stop: int, at_least: int) -> int:
        """End of the run of sentences from ``first`` (before ``stop``) that first reaches
        ``budget`` tokens; at least ``at_least`` sentences when the document has them."""
        cum = np.cumsum(self.lengths[first:stop])  # (stop - first,)
        end = first + int(np.searchsorted(cum, budget)) + 1  # the sentence that reaches the budget is included
        return int(min(max(end, first + at_least), stop))

    def _random_sentence(self, rng: np.random.Generator, first: int, end: int) -> tuple[int, int] | None:
        """A sentence of another document and where a B starting there must stop (its
        document's end); in a one-document corpus, a sentence at least a tenth of the corpus
        away from the chunk first..end-1, and B stops before reaching the chunk. None when
        the corpus has no such place."""
        n = len(self.lengths)
        if not self.single_doc:
            lo, hi = int(self.doc_first[first]), int(self.doc_end[first])
        else:
            gap = n // 10
            lo, hi = max(first - gap, 0), min(end + gap, n)
        if hi - lo >= n:
            return None
        k = int(rng.integers(n - (hi - lo)))  # uniform over [0, lo) and [hi, n)
        if k < lo:
            return k, (lo if self.single_doc else int(self.doc_end[k]))
        k += hi - lo
        return k, int(self.doc_end[k])

    def __repr__(self) -> str:
        return (f"SentencePairSampler({len(self.sentences)} sentences, batch_size={self.batch_size}, "
                f"max_len={self.max_len}, seed={self.seed}, rank={self.rank}/{self.world_size})")


def _truncate_pair(a, a_words, b, b_words, budget: int, rng: np.random.Generator):
    """Cut the longer segment, one token at a time, until len(A) + len(B) <= budget; each
    cut is at the front or the back at random (as in BERT, so neither end is favoured).
    Vectorised: the number of tokens each side loses is computed first."""
    la, lb = len(a), len(b)
    excess = la + lb - budget
    if excess <= 0:
        return a, a_words, b, b_words
    # Trimming the longer side repeatedly equalises them: the final lengths are the
    # budget split as evenly as the longer side allows.
    keep_b = min(lb, max(budget // 2, budget - la))
    keep_a = budget - keep_b
    a, a_words = _cut_to(a, a_words, keep_a, rng)
    b, b_words = _cut_to(b, b_words, keep_b, rng)
    return a, a_words, b, b_words


def _cut_to(ids: np.ndarray, words: np.ndarray, keep: int, rng: np.random.Generator):
    """``ids`` cut to ``keep`` tokens, the removed ones split at random between front and back."""
    drop = len(ids) - keep
    if drop <= 0:
        return ids, words
    front = int(rng.binomial(drop, 0.5))
    sl = slice(front, front + keep)
    return ids[sl], words[sl] - (words[sl][0] if keep else 0)
