"""Data: bundled corpora, and text -> memory-mapped token shards -> training windows.

    info = prepare_corpus(bundled_corpus("shakespeare"), tokenizer, "runs/x/data")
    train = WindowSampler(TokenShards("runs/x/data", "train"), batch_size=64, seq_len=256, seed=0)
    batch = train.batch(step)          # (64, 257) int64, a pure function of (seed, step)

BERT pretraining reads sentences (`prepare_sentences`, `SentencePairSampler`); fine-tuning
reads labelled TSV / CoNLL files (`read_labelled_tsv`, `read_conll`).
"""

from .bundled import available_corpora, bundled_corpus
from .labelled import (
    LabelledTexts,
    TaggedSentences,
    deduplicate,
    encode_tagged,
    read_conll,
    read_labelled_tsv,
    split_examples,
    write_conll,
    write_labelled_tsv,
)
from .sentences import SentencePairs, SentencePairSampler, Sentences, SentencesInfo, prepare_sentences
from .shards import CorpusInfo, TokenShards, WindowSampler, prepare_corpus, read_meta, token_dtype

__all__ = [
    "bundled_corpus",
    "available_corpora",
    "prepare_corpus",
    "CorpusInfo",
    "TokenShards",
    "WindowSampler",
    "read_meta",
    "token_dtype",
    "Sentences",
    "SentencesInfo",
    "SentencePairs",
    "SentencePairSampler",
    "prepare_sentences",
    "LabelledTexts",
    "TaggedSentences",
    "read_labelled_tsv",
    "write_labelled_tsv",
    "read_conll",
    "write_conll",
    "deduplicate",
    "split_examples",
    "encode_tagged",
]
