"""Labelled data for fine-tuning: text classification TSVs and CoNLL-style tagged tokens.

Text classification, one example a line, UTF-8, no header::

    label<TAB>text                   e.g.  pos<TAB>A gorgeous, witty, seductive movie.
    label<TAB>text_a<TAB>text_b      sentence pairs (entailment, paraphrase, ...)

Token classification (named entities), CoNLL style: one token a line with its tag in
the last column (tab- or space-separated), a blank line between sentences, and
``-DOCSTART-`` lines ignored::

    江<TAB>B-PER
    泽<TAB>I-PER
    民<TAB>I-PER

    ...

`encode_tagged` turns a tagged sentence into token ids with each word's tag on its first
piece. Helpers for building such sets honestly: `deduplicate` (exact duplicates kept once,
texts seen with different labels dropped, so a test set never repeats a training text)
and `split_examples` (seeded train / val / test, optionally keeping groups such as all
reviews of one movie on one side).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_open


# ---------------------------------------------------------------------- text classification
@dataclass
class LabelledTexts:
    """Texts (or text pairs) with string labels, in file order."""

    texts: list[str]
    labels: list[str]
    texts_b: list[str] | None = None  # second texts of sentence-pair tasks
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """The distinct labels, sorted (so ids are stable across train / val / test)."""
        return sorted(set(self.labels))

    def label_ids(self, names: Sequence[str] | None = None) -> np.ndarray:
        """(n,) int64 label ids in ``names`` order (default `label_names`); a label
        missing from ``names`` (e.g. a test label never seen in training) is an error."""
        names = list(names) if names is not None else self.label_names
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(self.labels) - set(index))
        if unknown:
            raise ValueError(f"{self.source}: label(s) {', '.join(map(repr, unknown))} are not among {names}")
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def balance(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def read_labelled_tsv(path: str | os.PathLike) -> LabelledTexts:
    """Read ``label<TAB>text`` (or ``label<TAB>text_a<TAB>text_b``) lines; blank lines
    are skipped. Every line must have the same number of fields."""
    path = Path(path)
    texts, labels, texts_b = [], [], []
    n_fields = None
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise ValueError(f"{path}, line {line_no}: expected 'label<TAB>text' or 'label<TAB>text_a<TAB>text_b', "
                             f"found {len(fields)} tab-separated field(s)")
        if n_fields is None:
            n_fields = len(fields)
        elif len(fields) != n_fields:
            raise ValueError(f"{path}, line {line_no}: {len(fields)} fields, but the lines before have {n_fields}")
        label = fields[0].strip()
        if not label:
            raise ValueError(f"{path}, line {line_no}: empty label")
        if not fields[1].strip() or (len(fields) == 3 and not fields[2].strip()):
            raise ValueError(f"{path}, line {line_no}: empty text")
        labels.append(label)
        texts.append(fields[1])
        if len(fields) == 3:
            texts_b.append(fields[2])
    if not texts:
        raise ValueError(f"{path} has no examples")
    return LabelledTexts(texts, labels, texts_b if n_fields == 3 else None, str(path))


def clean_field(text: str) -> str:
    """One TSV field: tabs and line breaks become spaces, runs of spaces one, ends trimmed."""
    return " ".join(text.split())


def write_labelled_tsv(path: str | os.PathLike, examples: Iterable[tuple[str, str]]) -> int:
    """Write ``(label, text)`` pairs as ``label<TAB>text`` lines (text cleaned of tabs and
    line breaks, which the format cannot hold); returns the number written."""
    path = Path(path)
    n = 0
    with atomic_open(path) as f:  # a bad example leaves the previous file, and no temporary
        for label, text in examples:
            label, text = clean_field(str(label)), clean_field(text)
            if not label or not text:
                raise ValueError(f"example {n + 1} for {path} has an empty label or text")
            f.write(f"{label}\t{text}\n")
            n += 1
    return n


# ---------------------------------------------------------------------- token classification
@dataclass
class TaggedSentences:
    """Sentences as token lists with one tag per token (e.g. BIO entity tags)."""

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def tag_names(self) -> list[str]:
        """Distinct tags, "O" first, then sorted, so ids are stable."""
        names = sorted({t for tags in self.tags for t in tags})
        return (["O"] + [t for t in names if t != "O"]) if "O" in names else names

    def entity_counts(self) -> dict[str, int]:
        """Entities per type, counting B- tags (and S- of IOBES)."""
        counts: Counter = Counter()
        for tags in self.tags:
            counts.update(t[2:] for t in tags if t[:2] in ("B-", "S-"))
        return dict(sorted(counts.items()))


def read_conll(path: str | os.PathLike) -> TaggedSentences:
    """Read CoNLL-style ``token<TAB>tag`` lines (tag in the last column; space-separated
    columns work too), sentences separated by blank lines."""
    path = Path(path)
    sentences, tags, cur_tokens, cur_tags = [], [], [], []
    for line_no, line in _lines(path):
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            if cur_tokens:
                sentences.append(cur_tokens)
                tags.append(cur_tags)
                cur_tokens, cur_tags = [], []
            continue
        fields = stripped.split("\t") if "\t" in stripped else stripped.split()
        if len(fields) < 2:
            raise ValueError(f"{path}, line {line_no}: expected 'token<TAB>tag', found {len(fields)} field(s): "
                             f"{stripped[:40]!r}")
        token, tag = fields[0], fields[-1].strip()
        if not tag:
            raise ValueError(f"{path}, line {line_no}: empty tag")
        cur_tokens.append(token)
        cur_tags.append(tag)
    if cur_tokens:
        sentences.append(cur_tokens)
        tags.append(cur_tags)
    if not sentences:
        raise ValueError(f"{path} has no sentences")
    return TaggedSentences(sentences, tags, str(path))


def write_conll(path: str | os.PathLike, sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> int:
    """Write ``(tokens, tags)`` sentences as ``token<TAB>tag`` lines, a blank line after each."""
    path = Path(path)
    n = 0
    with atomic_open(path) as f:
        for tokens, tags in sentences:
            if len(tokens) != len(tags):
                raise ValueError(f"sentence {n + 1} for {path}: {len(tokens)} tokens but {len(tags)} tags")
            for token, tag in zip(tokens, tags):
                if not token.strip() or any(c in token for c in "\t\n\r"):
                    raise ValueError(f"sentence {n + 1} for {path}: token {token!r} is empty or holds a tab / line break")
                f.write(f"{token}\t{tag}\n")
            f.write("\n")
            n += 1
    return n


IGNORE_INDEX = -100  # as in tfamily.objectives: no loss at this position


@dataclass
class TaggedEncoding:
    """One tagged sentence as token ids, with the tag of each word on its first piece."""

    ids: list[int]  # (L,) token ids, no specials added
    labels: list[int] | None  # (L,) tag id on each word's first piece, IGNORE_INDEX on the rest
    first_piece: list[int]  # (n_words,) index in ``ids`` of each word's first piece, -1 if it has none


def encode_tagged(tokenizer, tokens: Sequence[str], tags: Sequence[str] | None = None,
                  tag_names: Sequence[str] | None = None) -> TaggedEncoding:
    """Encode a sentence given as words (or Chinese characters) for token classification.

    A word may become several pieces ("Washington" -> "wash", "##ington"); as in BERT's
    NER recipe the word's tag is learned and predicted on its first piece only, so
    ``labels`` holds the tag id there and IGNORE_INDEX on the other pieces. A word that
    yields no piece at all (say, a lone control character) keeps ``first_piece = -1``:
    its prediction must default to "O" when the tags are read back.
    """
    if tags is not None:
        if len(tags) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
        if tag_names is None:
            raise ValueError("give tag_names (e.g. the training set's tag_names) to turn tags into ids")
        index = {name: i for i, name in enumerate(tag_names)}
        unknown = sorted(set(tags) - set(index))
        if unknown:
            raise ValueError(f"tag(s) {', '.join(map(repr, unknown))} are not among {list(tag_names)}")
    if not tokens:
        return TaggedEncoding([], [] if tags is not None else None, [])
    enc = tokenizer.backend.encode(list(tokens), is_pretokenized=True, add_special_tokens=False)
    first_piece = [-1] * len(tokens)
    labels = [IGNORE_INDEX] * len(enc.ids) if tags is not None else None
    for position, word in enumerate(enc.word_ids):
        if word is not None and first_piece[word] < 0:
            first_piece[word] = position
            if labels is not None:
                labels[position] = index[tags[word]]
    return TaggedEncoding(list(enc.ids), labels, first_piece)


# ---------------------------------------------------------------------- building sets
@dataclass
class DedupStats:
    seen: int  # examples given
    kept: int  # distinct texts with one label
    duplicates: int  # repeats of a kept (text, label)
    conflicting_texts: int  # distinct texts seen with more than one label (all dropped)
    dropped_conflicting: int = field(default=0)  # examples those texts had


def deduplicate(examples: Iterable[tuple[str, str]], key=clean_field) -> tuple[list[tuple[str, str]], DedupStats]:
    """``(label, text)`` examples with each text kept once (first occurrence, in order).

    Texts compare after ``key`` (default: whitespace normalised, as they will be written).
    A text that occurs with two labels is dropped entirely: it cannot be scored fairly and,
    kept in one split, its twin would leak into another."""
    labels_of: dict[str, set] = defaultdict(set)
    order: list[tuple[str, str]] = []
    count = 0
    first_seen: dict[str, tuple[str, str]] = {}
    occurrences: Counter = Counter()
    for label, text in examples:
        count += 1
        k = key(text)
        labels_of[k].add(label)
        occurrences[k] += 1
        if k not in first_seen:
            first_seen[k] = (label, text)
            order.append((k, label))
    conflicting = {k for k, labels in labels_of.items() if len(labels) > 1}
    kept = [first_seen[k] for k, _ in order if k not in conflicting]
    dropped = sum(occurrences[k] for k in conflicting)
    stats = DedupStats(seen=count, kept=len(kept), duplicates=count - len(kept) - dropped,
                       conflicting_texts=len(conflicting), dropped_conflicting=dropped)
    return kept, stats


def split_examples(examples: Sequence, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                   groups: Sequence[Hashable] | None = None) -> list[list]:
    """Shuffle (seeded) and cut ``examples`` into parts of about ``fractions`` of the whole.

    With ``groups`` (one key per example, e.g. a movie), whole groups are shuffled and cut,
    so no group is on both sides; the parts then hold about the fractions of the examples."""
    fractions = list(fractions)
    if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    if groups is not None and len(groups) != len(examples):
        raise ValueError(f"{len(groups)} group keys for {len(examples)} examples")
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [[i] for i in range(len(examples))]
    else:
        members: dict[Hashable, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        units = list(members.values())
    units = [units[i] for i in rng.permutation(len(units))]
    bounds = np.cumsum(fractions)[:-1] * len(examples)  # example counts where each part ends
    parts: list[list] = [[] for _ in fractions]
    done, part = 0, 0
    for unit in units:
        while part < len(bounds) and done >= bounds[part]:
            part += 1
        parts[part].extend(examples[i] for i in unit)
        done += len(unit)
    return parts


# ---------------------------------------------------------------------- reading
def _lines(path: Path):
    """(line number, line without its line break) of a UTF-8 file, with a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, "rb") as f:  # bytes, decoded line by line, so a bad byte is pinned to its line
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a byte-order mark some editors write
            yield line_no, line.rstrip("\r\n")
