"""Training recipes: for each kind of family, how its data is prepared and batched and which
objective it trains with. The family registry (models/family.py) names a family's recipe;
``RECIPES[family.recipe]`` is it. Options come as one dict, the ``data:`` section of a run config
with the command line's flags laid over it (``DataOptions`` lists every key).

    prepare(opts, tokenizer | None, data_dir, max_len) -> tokenizer   (writes data_dir; trains a tokenizer if none)
    data(model_cfg, tokenizer, data_dir, train_cfg, opts, ctx) -> (train batches, val batches, objective)

    text       token shards, windows, causal LM             (decoders, Transformer-XL)
    sentences  sentences of documents, MLM + NSP            (BERT)
    pairs      translation pairs by token budget, seq2seq   (or, given text, T5 span corruption / BART denoising)
    glm        token shards, blank infilling                (GLM)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from ..config import ValidatedConfig


class RecipeError(ValueError):
    """Data that a recipe cannot use (the CLI prints it as one line)."""


@dataclass
class DataOptions(ValidatedConfig):
    """The ``data:`` section of a run config: every key it may have, with its type (each is
    also a command-line flag, or kept with the run for --resume)."""

    _kind = "data"
    path: Optional[str] = None  # a text file or a bundled corpus name (--data)
    tokenizer: Optional[Literal["char", "word", "bpe", "wordpiece"]] = None
    vocab_size: Optional[int] = None
    val_fraction: Optional[float] = None
    src: Optional[str] = None
    tgt: Optional[str] = None
    pairs: Optional[str] = None
    val_src: Optional[str] = None
    val_tgt: Optional[str] = None
    source_prefix: Optional[str] = None
    objective: Optional[Literal["span_corruption", "denoising"]] = None
    whole_word: Optional[bool] = None
    segmenter: Optional[str] = None
    gmask_prob: Optional[float] = None


def resolve_corpus(name_or_path: str) -> Path:
    """A text file, or the name of a bundled corpus (``shakespeare``)."""
    from ..data import bundled_corpus
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and "/" not in name_or_path:
        try:
            return bundled_corpus(name_or_path)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise RecipeError(f"--data {name_or_path!r} is neither a file nor a bundled corpus: {e}") from None
    raise RecipeError(f"--data: file {name_or_path} not found")


DEFAULT_BATCH_TOKENS = 4096
PAIRS_FILE = "{split}.pairs.safetensors"


def prepare_text(opts: dict, tokenizer, data_dir: Path, max_len: int):
    """Language modelling data: one text file -> a tokenizer (unless given) -> token shards."""
    from ..data import prepare_corpus
    from ..tokenizers import Tokenizer
    if any(opts.get(k) for k in ("src", "tgt", "pairs", "val_src", "val_tgt")):
        raise RecipeError("--src/--tgt/--pairs/--val-src/--val-tgt are translation data; "
                         "choose an encoder-decoder preset (e.g. transformer-small) for them")
    corpus = resolve_corpus(opts.get("path") or "shakespeare")
    t0 = time.perf_counter()
    if tokenizer is None:
        tokenizer = Tokenizer.train(opts.get("tokenizer", "char"), [str(corpus)],
                                    vocab_size=opts.get("vocab_size", 4096))
    info = prepare_corpus(corpus, tokenizer, data_dir, val_fraction=opts.get("val_fraction", 0.1))
    print(f"data: {corpus} -> {tokenizer.kind} tokenizer, {tokenizer.vocab_size} tokens in vocabulary; "
          f"{info.train_tokens:,} train / {info.val_tokens:,} val tokens ({time.perf_counter() - t0:.1f}s)",
          file=sys.stderr)
    return tokenizer


def prepare_pairs(opts: dict, tokenizer, data_dir: Path, max_len: int):
    """Translation data: aligned files or a TSV -> a joint tokenizer on both sides (unless
    given) -> token pairs for train and val in the run folder. With --data instead, text for
    denoising pretraining (T5 span corruption, BART infilling)."""
    import numpy as np

    from ..data.parallel import TokenPairs, read_parallel
    from ..tokenizers import Tokenizer
    if opts.get("path") and not (opts.get("src") or opts.get("pairs")):
        return prepare_denoising(opts, tokenizer, data_dir)
    src, tgt, tsv = opts.get("src"), opts.get("tgt"), opts.get("pairs")
    if not (tsv or (src and tgt)):
        raise RecipeError("an encoder-decoder model trains on translation pairs: give --src and --tgt files "
                         "(one sentence a line) or --pairs FILE.tsv")
    t0 = time.perf_counter()
    train_pairs = read_parallel(src, tgt) if not tsv else read_parallel(tsv=tsv)
    val_src, val_tgt = opts.get("val_src"), opts.get("val_tgt")
    if bool(val_src) != bool(val_tgt):
        raise RecipeError("give both --val-src and --val-tgt, or neither")
    if val_src:
        val_pairs = read_parallel(val_src, val_tgt)
    else:  # hold out a seeded random slice of the training pairs
        fraction = opts.get("val_fraction", 0.05)
        order = np.random.default_rng(0).permutation(len(train_pairs))
        n_val = max(1, int(len(train_pairs) * fraction))
        val_pairs = [train_pairs[i] for i in order[:n_val]]
        train_pairs = [train_pairs[i] for i in order[n_val:]]
    if not train_pairs or not val_pairs:
        raise RecipeError("translation data needs at least one training and one validation pair")
    prefix = opts.get("source_prefix")
    if prefix:  # T5's text-to-text format: the task is named in the input
        train_pairs = [(prefix + s, t) for s, t in train_pairs]
        val_pairs = [(prefix + s, t) for s, t in val_pairs]
    if tokenizer is None:
        kind = opts.get("tokenizer", "bpe")
        texts = [s for s, _ in train_pairs] + [t for _, t in train_pairs]
        tokenizer = Tokenizer.train(kind, texts, vocab_size=opts.get("vocab_size", 8000))
    data_dir.mkdir(parents=True, exist_ok=True)
    counts = []
    for split, pairs in (("train", train_pairs), ("val", val_pairs)):
        encoded = TokenPairs.encode(tokenizer, pairs, max_len=max_len - 1)  # room for BOS / EOS
        encoded.save(data_dir / PAIRS_FILE.format(split=split))
        counts.append((len(encoded), int(encoded.lengths()[0].sum()), int(encoded.lengths()[1].sum())))
    tokenizer.save(data_dir / "tokenizer.json")
    (tr, tr_s, tr_t), (va, _, _) = counts
    print(f"data: {len(train_pairs):,} train / {va:,} val pairs -> joint {tokenizer.kind} tokenizer of "
          f"{tokenizer.vocab_size} tokens; {tr_s:,} source / {tr_t:,} target train tokens "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return tokenizer


def prepare_sentences(opts: dict, tokenizer, data_dir: Path, max_len: int):
    """Masked-LM pretraining data: a text file (one sentence a line, blank lines between
    documents) -> a WordPiece tokenizer (unless given) -> tokenised sentences."""
    from ..data.sentences import prepare_sentences as write_sentences
    from ..tokenizers import Tokenizer
    if any(opts.get(k) for k in ("src", "tgt", "pairs")):
        raise RecipeError("--src/--tgt/--pairs are translation data; an encoder pretrains on --data TEXT")
    corpus = resolve_corpus(opts.get("path") or "shakespeare")
    t0 = time.perf_counter()
    if tokenizer is None:
        kind = opts.get("tokenizer", "wordpiece")
        tokenizer = Tokenizer.train(kind, [str(corpus)], vocab_size=opts.get("vocab_size", 8000))
    info = write_sentences(corpus, tokenizer, data_dir, val_fraction=opts.get("val_fraction", 0.1),
                             segmenter=word_segmenter(opts.get("segmenter")))
    if info.val_path is None:
        raise RecipeError(f"{corpus}: too little text to hold out validation sentences")
    tokenizer.save(data_dir / "tokenizer.json")
    print(f"data: {corpus} -> {tokenizer.kind} tokenizer, {tokenizer.vocab_size} tokens in vocabulary; "
          f"{info.train_sentences:,} train sentences in {info.train_docs:,} documents, {info.val_sentences:,} val "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return tokenizer


DATA_OPTIONS = ("objective", "whole_word", "segmenter", "source_prefix")  # kept with a run for --resume


def prepare_denoising(opts: dict, tokenizer, data_dir: Path):
    """Encoder-decoder pretraining text: a BPE tokenizer with <mask> and T5's sentinels
    (unless given), token shards as for language models."""
    from ..tokenizers import Tokenizer
    from ..tokenizers.sentinels import add_sentinels, sentinel_ids
    from ..tokenizers.special import SPECIAL_TOKENS
    if any(opts.get(k) for k in ("src", "tgt", "pairs")):
        raise RecipeError("give either --data (denoising pretraining) or translation pairs, not both")
    opts.setdefault("objective", "span_corruption")
    if tokenizer is None:
        corpus = resolve_corpus(opts["path"])
        tokenizer = Tokenizer.train(opts.get("tokenizer", "bpe"), [str(corpus)],
                                    vocab_size=opts.get("vocab_size", 8000),
                                    special_tokens={**SPECIAL_TOKENS, "mask": "<mask>"})
    if opts["objective"] == "span_corruption" and len(sentinel_ids(tokenizer)) < 2:
        tokenizer = add_sentinels(tokenizer, 100)
    return prepare_text(opts, tokenizer, data_dir, 0)


def word_segmenter(name: str | None):
    """A word segmenter for whole-word masking of Chinese (``jieba``), or None."""
    if not name:
        return None
    if name != "jieba":
        raise RecipeError(f"data.segmenter: unknown segmenter {name!r}; known: jieba")
    try:
        import jieba
    except ImportError:
        raise RecipeError("data.segmenter 'jieba' needs the jieba package: pip install jieba") from None
    return lambda text: list(jieba.cut(text))


def denoising_data(model_cfg, tokenizer, data_dir: Path, train_cfg, objective_name: str | None, ctx=None):
    """(train, val, objective) for T5 span corruption or BART denoising over text windows."""
    from ..objectives.denoising import DENOISING_SALT, DenoisingObjective, SpanCorruptionObjective
    from ..tokenizers.sentinels import sentinel_ids
    ids = tokenizer.special_ids
    start = model_cfg.decoder_start_token_id if model_cfg.decoder_start_token_id is not None else ids.get("bos")
    if ids.get("pad") is None or ids.get("eos") is None or start is None:
        raise RecipeError("denoising pretraining needs a tokenizer with pad and eos tokens and a decoder start token")
    if train_cfg.seq_len + 1 > model_cfg.max_seq_len:
        raise RecipeError(f"seq_len {train_cfg.seq_len} + 1 (the end token) exceeds the model's max_seq_len "
                         f"{model_cfg.max_seq_len}")
    common = dict(pad_id=ids["pad"], start_id=start, eos_id=ids["eos"], label_smoothing=train_cfg.label_smoothing)
    if (objective_name or "span_corruption") == "span_corruption":
        objective = SpanCorruptionObjective(sentinel_ids(tokenizer), **common)
    else:
        if ids.get("mask") is None:
            raise RecipeError("BART denoising needs a <mask> token in the tokenizer")
        ends = [i for i in (tokenizer.token_to_id(p) for p in (".", "!", "?", "。", "！", "？")) if i is not None]
        objective = DenoisingObjective(ids["mask"], sentence_ends=ends, **common)
    return (*seeded_windows(data_dir, train_cfg, ctx, trim_last=True, salt=DENOISING_SALT), objective)


def seeded_windows(data_dir: Path, train_cfg, ctx, trim_last: bool = False, salt: tuple[int, ...] = ()):
    """(train, val) random windows of the token shards, each row with a seed for the objective's
    randomness (objectives.base.SeededWindows); this rank's share of the batch under torchrun."""
    from ..data import TokenShards, WindowSampler
    from ..objectives.base import SeededWindows
    from .distributed import SINGLE
    ctx = ctx or SINGLE
    window = lambda split, seed: SeededWindows(WindowSampler(  # noqa: E731
        TokenShards(data_dir, split), train_cfg.batch_size // ctx.world_size, train_cfg.seq_len, seed,
        rank=ctx.rank, world_size=ctx.world_size), seed, trim_last=trim_last, salt=salt)
    return window("train", train_cfg.seed), window("val", train_cfg.seed + 1)


GLM_GMASK_PROB = 0.3  # tfamily train: share of GLM rows blanked the gMASK way (a long suffix), the rest by [MASK]s


def prepare_glm(opts: dict, tokenizer, data_dir: Path, max_len: int):
    """GLM pretraining data: token shards as for a decoder, from a tokenizer (unless given)
    that also has GLM's [MASK], [S], [E] and [gMASK]."""
    from ..tokenizers import Tokenizer
    from ..tokenizers.special import GLM_SPECIAL_TOKENS, WORDPIECE_SPECIAL_TOKENS
    if tokenizer is None and not any(opts.get(k) for k in ("src", "tgt", "pairs")):  # (prepare_text refuses those)
        corpus = resolve_corpus(opts.get("path") or "shakespeare")
        kind = opts.get("tokenizer", "char")
        specials = GLM_SPECIAL_TOKENS
        if kind == "wordpiece":  # BERT's names, plus the span tokens
            specials = {**WORDPIECE_SPECIAL_TOKENS, **{r: GLM_SPECIAL_TOKENS[r] for r in ("span_start", "span_end", "gmask")}}
        tokenizer = Tokenizer.train(kind, [str(corpus)], vocab_size=opts.get("vocab_size", 4096),
                                    special_tokens=specials)
    return prepare_text(opts, tokenizer, data_dir, max_len)


def glm_data(model_cfg, tokenizer, data_dir: Path, train_cfg, opts: dict, ctx=None):
    """GLM: random windows of the token shards, each blanked by the GLM objective from a seed
    its row carries, so resumed runs see the same blanks."""
    from ..objectives.glm import GLMObjective
    objective = GLMObjective.from_tokenizer(tokenizer, gmask_prob=opts.get("gmask_prob", GLM_GMASK_PROB),
                                            max_len=model_cfg.max_seq_len)
    return (*seeded_windows(data_dir, train_cfg, ctx), objective)


def _shard(train_cfg, ctx):
    """This rank's rows per batch and its share of the sampler (the whole batch with one process)."""
    from .distributed import SINGLE
    ctx = ctx or SINGLE
    if train_cfg.batch_size % (ctx.world_size * train_cfg.grad_accum):
        raise RecipeError(f"batch_size {train_cfg.batch_size} must split evenly over {ctx.world_size} processes x "
                          f"{train_cfg.grad_accum} micro-batches")
    return train_cfg.batch_size // ctx.world_size, dict(rank=ctx.rank, world_size=ctx.world_size)


def text_data(model_cfg, tokenizer, data_dir: Path, train_cfg, opts: dict, ctx=None, objective=None):
    """Causal LM: random windows of the token shards (``objective``: another one over the same
    windows, e.g. the bidirectional LM)."""
    from ..data import TokenShards, WindowSampler
    from ..objectives import CausalLMObjective
    per_rank, shard = _shard(train_cfg, ctx)
    train = WindowSampler(TokenShards(data_dir, "train"), per_rank, train_cfg.seq_len, train_cfg.seed, **shard)
    val = WindowSampler(TokenShards(data_dir, "val"), per_rank, train_cfg.seq_len, train_cfg.seed + 1, **shard)
    return train, val, (objective or CausalLMObjective)(train_cfg.label_smoothing)


def bilm_data(model_cfg, tokenizer, data_dir: Path, train_cfg, opts: dict, ctx=None):
    """ELMo-style: the same text windows, each position predicting its next and its previous token."""
    from ..objectives import BiLMObjective
    return text_data(model_cfg, tokenizer, data_dir, train_cfg, opts, ctx, BiLMObjective)


def sentence_data(model_cfg, tokenizer, data_dir: Path, train_cfg, opts: dict, ctx=None):
    """BERT: sentence pairs (half of them consecutive) for masked LM and next-sentence prediction."""
    from ..data.sentences import SentencePairSampler, Sentences
    from ..objectives.mlm import MaskedLMObjective
    per_rank, shard = _shard(train_cfg, ctx)
    objective = MaskedLMObjective.from_tokenizer(tokenizer, whole_word=bool(opts.get("whole_word")),
                                                 nsp_weight=1.0 if model_cfg.nsp else 0.0)
    load = lambda split: Sentences.load(data_dir / f"{split}.sentences.safetensors")  # noqa: E731
    train = SentencePairSampler(load("train"), per_rank, train_cfg.seq_len, train_cfg.seed, **shard)
    val = SentencePairSampler(load("val"), per_rank, train_cfg.seq_len, train_cfg.seed + 1, **shard)
    return train, val, objective


def pair_data(model_cfg, tokenizer, data_dir: Path, train_cfg, opts: dict, ctx=None):
    """Encoder-decoder: translation pairs in batches of about ``batch_tokens``, or, when the run
    prepared text instead of pairs, T5 span corruption / BART denoising over windows."""
    if not (data_dir / PAIRS_FILE.format(split="train")).is_file():
        return denoising_data(model_cfg, tokenizer, data_dir, train_cfg, opts.get("objective"), ctx)
    from ..data.parallel import TokenBatches, TokenPairs
    from ..objectives import Seq2SeqObjective
    _, shard = _shard(train_cfg, ctx)
    for role in ("pad", "bos", "eos"):
        if tokenizer.special_ids.get(role) is None:
            raise RecipeError(f"translation needs a tokenizer with a {role} token")
    budget = train_cfg.batch_tokens or DEFAULT_BATCH_TOKENS
    train = TokenBatches(TokenPairs.load(data_dir / PAIRS_FILE.format(split="train")), budget, train_cfg.seed,
                         **shard)
    val = TokenBatches(TokenPairs.load(data_dir / PAIRS_FILE.format(split="val")), budget, shuffle=False, **shard)
    start = model_cfg.decoder_start_token_id
    objective = Seq2SeqObjective(tokenizer.pad_id, tokenizer.bos_id if start is None else start,
                                 tokenizer.eos_id, train_cfg.label_smoothing)
    return train, val, objective


@dataclass(frozen=True)
class Recipe:
    prepare: Callable[..., Any]  # (opts, tokenizer | None, data_dir, max_len) -> tokenizer
    data: Callable[..., tuple]  # (model_cfg, tokenizer, data_dir, train_cfg, opts, ctx) -> (train, val, objective)
    by_tokens: bool = False  # batches hold about ``batch_tokens`` tokens, not batch_size x seq_len


RECIPES = {
    "text": Recipe(prepare_text, text_data),
    "bilm": Recipe(prepare_text, bilm_data),
    "sentences": Recipe(prepare_sentences, sentence_data),
    "pairs": Recipe(prepare_pairs, pair_data, by_tokens=True),
    "glm": Recipe(prepare_glm, glm_data),
}
