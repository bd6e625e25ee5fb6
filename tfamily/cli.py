"""`tfamily <command>`: a table from command name to a typed function.

Each command is a function ``cmd_x(args)``; ``COMMANDS`` maps names to (function, help,
argument adder). Errors that a user can fix are printed as one line, without a traceback
(set TFAMILY_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from .config import ConfigError, ValidatedConfig


class UsageError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------
TRAIN_FLAGS = {  # CLI flag -> (type, help); each sets the TrainConfig field of the same name
    "steps": (int, "optimizer steps; the schedule's length unless --max-time ends first (default 5000)"),
    "max_time": (float, "wall-clock budget in seconds, counted across resumes; the schedule anneals over it"),
    "batch_size": (int, "sequences per optimizer step (default 16)"),
    "batch_tokens": (int, "translation: tokens per batch, sentences grouped by length (default 4096)"),
    "seq_len": (int, "tokens per training sequence, and the new model's context (default 64)"),
    "grad_accum": (int, "micro-batches per step; batch-size is split over them (default 1)"),
    "lr": (float, "peak learning rate (default 6e-3)"),
    "min_lr": (float, "learning rate at the end of the cosine (default lr/10)"),
    "warmup": (int, "linear warm-up steps (default 50)"),
    "optimizer": (str, "muon (Muon on hidden matrices + AdamW) or adamw (default muon)"),
    "beta2": (float, "AdamW beta2 (default 0.99)"),
    "weight_decay": (float, "decoupled weight decay on matrices (default 0.1)"),
    "grad_clip": (float, "max global gradient norm (default 1.0)"),
    "max_bad_steps": (int, "a NaN/inf loss skips its step; this many in a row stop the run, keeping the last "
                           "good checkpoint (default 5)"),
    "schedule": (str, "cosine, constant or inverse_sqrt (default cosine)"),
    "label_smoothing": (float, "label smoothing of the cross-entropy (default 0)"),
    "eval_interval": (int, "steps between validation passes and checkpoints (default 250)"),
    "eval_batches": (int, "validation batches per pass (default 20)"),
    "log_interval": (int, "steps between metrics.jsonl lines (default 10)"),
    "seed": (int, "random seed for init, data order and dropout (default 1337)"),
    "device": (str, "cpu, cuda, cuda:1 ... (default: cuda if available)"),
    "threads": (int, "CPU threads for torch (default: torch's choice)"),
    "parallel": (str, "under torchrun: ddp (default) or fsdp (FSDP2 sharding; needs --optimizer adamw)"),
}


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML run config (see configs/); flags given here override it")
    p.add_argument("--data", help="a UTF-8 text file, or the name of a bundled corpus ('shakespeare')")
    p.add_argument("--src", help="translation: source sentences, one a line (.gz is fine); needs an encoder-decoder preset")
    p.add_argument("--tgt", help="translation: target sentences, aligned line by line with --src")
    p.add_argument("--pairs", help="translation: one TSV file of source<TAB>target lines, instead of --src/--tgt")
    p.add_argument("--val-src", help="translation: validation source file (default: hold out 5 %% of the pairs)")
    p.add_argument("--source-prefix", help="text-to-text: put this before every source, e.g. "
                                            "'translate English to German: ' (kept with the model for translate)")
    p.add_argument("--val-tgt", help="translation: validation target file")
    p.add_argument("--objective", choices=["span_corruption", "denoising"],
                   help="encoder-decoder pretraining on --data text: T5's span corruption (default) or BART's "
                        "text infilling with sentence permutation")
    p.add_argument("--tokenizer", choices=["char", "word", "bpe", "wordpiece"],
                   help="tokenizer to train on the data (default char; bpe for translation, wordpiece for BERT)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size for word/bpe tokenizers (default 4096)")
    p.add_argument("--preset", help="model preset (see `tfamily presets`; default gpt-tiny)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field, e.g. --set n_layer=4 (repeatable)")
    p.add_argument("--out", help="run folder: data shards, checkpoint, metrics.jsonl, loss.png (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--force", action="store_true",
                   help="start a new run in an --out that already holds one (its checkpoint is replaced at the "
                        "new run's first save, its metrics.jsonl started afresh)")
    p.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights and tokenizer")
    p.add_argument("--lora", type=int, metavar="RANK", help="with --init: train only LoRA adapters of this rank")
    p.add_argument("--lora-targets", default="qkv,out",
                   help="layers that get adapters: qkv, out, fc_in, fc_gate, fc_out (default qkv,out)")
    for name, (typ, help_text) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name, help=help_text)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on where the hardware is fast at it)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   dest="activation_checkpointing",
                   help="recompute block activations in backward: less memory, about a third more compute")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_run_config(path: str | None) -> dict[str, Any]:
    """A YAML run config: {model: {preset, ...fields}, data: {path, tokenizer, vocab_size}, train: {...}}."""
    if not path:
        return {"model": {}, "data": {}, "train": {}}
    import yaml

    from .config import ModelConfig
    from .training import TrainConfig
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"run config {path} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not a YAML run config (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise UsageError(f"{path}: not valid YAML ({problem}{where})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a run config must be a mapping with model / data / train sections, "
                         f"not a {type(raw).__name__}")
    unknown = sorted(map(str, set(raw) - {"model", "data", "train"}))
    if unknown:
        raise UsageError(f"{path}: unknown section(s) {unknown}; expected model, data, train")
    run = {}
    for name, fields in (("model", ModelConfig), ("data", DataSection), ("train", TrainConfig)):
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise UsageError(f"{path}: section {name!r} must be a mapping of field: value, "
                             f"got {type(section).__name__} {str(section)[:40]!r}")
        if name == "model":
            if not isinstance(section.get("preset", ""), str):
                raise UsageError(f"{path}: model.preset must be a preset name (a string), got {section['preset']!r}")
            section = {k: v for k, v in section.items() if k != "preset"}
        try:
            fields.check_fields(section)  # names and types here; values are checked with the flags merged
        except ConfigError as e:
            raise UsageError(f"{path}: {name}: {e}") from None
        run[name] = dict(raw.get(name) or {})
    return run


@dataclass
class DataSection(ValidatedConfig):
    """The ``data:`` section of a run config: every key it may have, with its type (each is
    also a command-line flag, or kept with the run; see the _prepare_* functions)."""

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
    from .data import bundled_corpus
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and "/" not in name_or_path:
        try:
            return bundled_corpus(name_or_path)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise UsageError(f"--data {name_or_path!r} is neither a file nor a bundled corpus: {e}") from None
    raise UsageError(f"--data: file {name_or_path} not found")


def say(ctx, message: str) -> None:
    """A progress line on stderr, from rank 0 only under torchrun."""
    if ctx.is_main:
        print(message, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import check_checkpoint, load_trainer_state, read_chat_template
    from .models import build_model
    from .presets import get_preset
    from .tokenizers import Tokenizer
    from .training import TrainConfig, Trainer
    from .training.distributed import barrier, finish, from_env
    from .training.trainer import CHECKPOINT_DIR

    run = load_run_config(args.config)
    model_sec, data_sec, train_sec = run["model"], run["data"], run["train"]
    preset = model_sec.pop("preset", None)
    preset = args.preset or preset or "gpt-tiny"
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        model_sec[key] = _parse_value(value)
    out = Path(args.out or train_sec.pop("out_dir", None) or f"runs/{preset}")
    train_sec.pop("out_dir", None)
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            train_sec[name] = getattr(args, name)
    for name in ("bf16", "compile", "activation_checkpointing"):
        if getattr(args, name) is not None:
            train_sec[name] = getattr(args, name)
    if args.no_progress:
        train_sec["progress"] = False

    ckpt = out / CHECKPOINT_DIR
    if args.resume:
        if not ckpt.is_dir():
            raise UsageError(f"--resume: no checkpoint in {out} to resume from")
        fixed = [flag for flag, given in (("--data", args.data), ("--src", args.src), ("--tgt", args.tgt),
                                          ("--pairs", args.pairs), ("--tokenizer", args.tokenizer),
                                          ("--preset", args.preset), ("--set", args.set), ("--init", args.init),
                                          ("--lora", args.lora)) if given]
        if fixed:
            raise UsageError(f"--resume continues the run as it was saved; {', '.join(fixed)} cannot change it")
        state, _ = load_trainer_state(ckpt)
        data_sec = {**state.get("data_options", {}), **data_sec}  # how the run's batches are built
        if state.get("lora"):
            raise UsageError("LoRA runs save merged weights, not the adapters, so they cannot resume; "
                             f"fine-tune further with --init {ckpt}")
        train_cfg = TrainConfig.from_dict({**state["train_config"], **train_sec, "out_dir": str(out)})
        ctx = from_env(train_cfg.device)
        model_cfg = check_checkpoint(ckpt)  # config.json and the weights' header, before anything is printed
        tokenizer = checkpoint_tokenizer(ckpt, model_cfg)
        # the shards live in the run folder unless the run was made elsewhere and moved
        data_dir = out / "data" if (out / "data").is_dir() else Path(state["data_dir"])
        say(ctx, f"resuming {out} at step {state['step']} of {train_cfg.steps}"
            + (f" on {ctx.world_size} processes (saved from {state.get('world_size', 1)})" if ctx.enabled else ""))
    else:
        if ckpt.exists() and not args.force:
            raise UsageError(f"{out} already holds a checkpoint; use --resume to continue it, --force to start "
                             "over, or choose another --out")
        if out.is_dir() and any(out.iterdir()) and not args.force:
            raise UsageError(f"{out} already holds files but no checkpoint (a run stopped before its first save?); "
                             "nothing was written. Pass --force to start the run over in it, or choose another --out")
        if args.force:
            (out / "metrics.jsonl").unlink(missing_ok=True)  # a new run's log; the checkpoint goes at its first save
        train_cfg = TrainConfig.from_dict({**train_sec, "out_dir": str(out)})
        if args.lora and not args.init:
            raise UsageError("--lora adapts an existing model: give it with --init CKPT")
        if args.init:  # fine-tuning keeps the model's own tokenizer and shape
            model_cfg = check_checkpoint(args.init)  # a broken file is reported before the data is prepared
            tokenizer = checkpoint_tokenizer(args.init, model_cfg)
            preset = f"init:{args.init}"
        else:
            model_cfg = get_preset(preset).config(**{**model_sec, "vocab_size": 256})  # check fields before tokenizing
            tokenizer = None
        data_dir = out / "data"
        ctx = from_env(train_cfg.device)
        if ctx.is_main:  # one process tokenises; under torchrun the others wait and read its tokenizer
            tokenizer = PREPARE[model_cfg.arch](args, data_sec, tokenizer, data_dir, model_cfg.max_seq_len)
        barrier(ctx)
        if not ctx.is_main:
            tokenizer = Tokenizer.load(data_dir / "tokenizer.json")
        if not args.init:
            fields = {**model_sec, "vocab_size": tokenizer.vocab_size}
            if tokenizer.pad_id is not None:
                fields.setdefault("pad_token_id", tokenizer.pad_id)
            if model_cfg.arch == "encoder-decoder":
                if tokenizer.bos_id is not None:
                    fields.setdefault("decoder_start_token_id", tokenizer.bos_id)  # the target starts from <s>
            elif model_cfg.arch == "decoder":
                fields.setdefault("max_seq_len", train_cfg.seq_len)  # a context as long as what it trains on
            elif model_cfg.arch == "glm":
                from .objectives.glm import glm_row_limit
                fields.setdefault("decoder_start_token_id", tokenizer.special_ids["span_start"])  # [S] starts a span
                fields.setdefault("max_seq_len", glm_row_limit(train_cfg.seq_len + 1))  # Part A + Part B of a window
            model_cfg = get_preset(preset).config(**fields)
        if data_sec.get("source_prefix"):
            model_cfg.extra["source_prefix"] = data_sec["source_prefix"]
    # a transformer-xl window longer than its segment (max_seq_len) runs as consecutive segments with memory
    if model_cfg.arch not in ("encoder-decoder", "transformer-xl") and train_cfg.seq_len > model_cfg.max_seq_len:
        raise UsageError(f"seq_len {train_cfg.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}")

    torch.manual_seed(train_cfg.seed)
    if args.init and not args.resume:
        from .checkpoint import load_model
        model = load_model(args.init)[0].train()
    else:
        model = build_model(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    layers = (f"{model_cfg.encoder_layers} + {model_cfg.n_layer}" if model_cfg.arch == "encoder-decoder"
              else f"{model_cfg.n_layer}")
    say(ctx, f"model: {preset}, {n_params / 1e6:.2f}M parameters, {layers} layers x {model_cfg.d_model} wide")
    if args.lora:
        from .nn.lora import add_lora
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        trainable = add_lora(model, r=args.lora, alpha=2.0 * args.lora, targets=targets)
        say(ctx, f"LoRA rank {args.lora} on {', '.join(targets)}: {trainable:,} trainable parameters "
                 f"({100 * trainable / n_params:.2f}% of {n_params:,})")
    train, val, objective = _training_data(model_cfg, tokenizer, data_dir, train_cfg, data_sec, ctx)
    trainer = Trainer(model, model_cfg, objective, train, val, train_cfg, dist=ctx,
                      tokenizer_json=tokenizer.to_str(),
                      extra_state={"data_dir": str(data_dir), "preset": preset, "lora": args.lora or 0,
                                   "data_options": {k: data_sec[k] for k in DATA_OPTIONS if k in data_sec}},
                      chat_template=read_chat_template(args.init or ckpt) if (args.init or args.resume) else None)
    if args.resume:
        trainer.resume(ckpt)
    by_tokens = (data_dir / PAIRS_FILE.format(split="train")).is_file()  # translation pairs
    batch = (f"{train_cfg.batch_tokens or DEFAULT_BATCH_TOKENS} tokens" if by_tokens
             else f"{train_cfg.batch_size} x {train_cfg.seq_len}")
    where = f"{ctx.world_size} processes ({train_cfg.parallel}, {trainer.device.type})" if ctx.enabled \
        else str(trainer.device)
    say(ctx, f"training: {' + '.join(type(o).__name__ for o in trainer.optimizers)}, lr {train_cfg.lr:g}, "
             f"batch {batch}, bf16 autocast {'on' if trainer.bf16 else 'off'}, on {where}; until step {train_cfg.steps}"
             + (f" or {train_cfg.max_time:g}s" if train_cfg.max_time else ""))
    result = trainer.fit()
    val_loss = result["val_loss"]
    say(ctx, f"done: step {result['step']}, {result['elapsed']:.0f}s, "
             f"val loss {val_loss:.4f} nats/token" if val_loss is not None else "done")
    if ctx.is_main:
        print(f"checkpoint: {result['checkpoint']}   metrics: {out / 'metrics.jsonl'}   plot: {out / 'loss.png'}")
    finish(ctx, 130 if result["interrupted"] else 0)  # ends a torchrun worker here (see finish)
    if result["interrupted"]:
        print(f"interrupted; continue with: tfamily train --out {out} --resume", file=sys.stderr)
        return 130
    return 0


DEFAULT_BATCH_TOKENS = 4096
PAIRS_FILE = "{split}.pairs.safetensors"


def _prepare_text(args, data_sec: dict, tokenizer, data_dir: Path, max_len: int):
    """Language modelling data: one text file -> a tokenizer (unless given) -> token shards."""
    from .data import prepare_corpus
    from .tokenizers import Tokenizer
    if args.src or args.tgt or args.pairs or args.val_src or args.val_tgt:
        raise UsageError("--src/--tgt/--pairs/--val-src/--val-tgt are translation data; "
                         "choose an encoder-decoder preset (e.g. transformer-small) for them")
    corpus = resolve_corpus(args.data or data_sec.get("path") or "shakespeare")
    t0 = time.perf_counter()
    if tokenizer is None:
        tokenizer = Tokenizer.train(args.tokenizer or data_sec.get("tokenizer", "char"), [str(corpus)],
                                    vocab_size=args.vocab_size or data_sec.get("vocab_size", 4096))
    info = prepare_corpus(corpus, tokenizer, data_dir, val_fraction=data_sec.get("val_fraction", 0.1))
    print(f"data: {corpus} -> {tokenizer.kind} tokenizer, {tokenizer.vocab_size} tokens in vocabulary; "
          f"{info.train_tokens:,} train / {info.val_tokens:,} val tokens ({time.perf_counter() - t0:.1f}s)",
          file=sys.stderr)
    return tokenizer


def _prepare_pairs(args, data_sec: dict, tokenizer, data_dir: Path, max_len: int):
    """Translation data: aligned files or a TSV -> a joint tokenizer on both sides (unless
    given) -> token pairs for train and val in the run folder. With --data instead, text for
    denoising pretraining (T5 span corruption, BART infilling)."""
    import numpy as np

    from .data.parallel import TokenPairs, read_parallel
    from .tokenizers import Tokenizer
    if args.data or (data_sec.get("path") and not (args.src or args.pairs)):
        return _prepare_denoising(args, data_sec, tokenizer, data_dir)
    pick = lambda flag, key: getattr(args, flag) or data_sec.get(key)  # noqa: E731
    src, tgt, tsv = pick("src", "src"), pick("tgt", "tgt"), pick("pairs", "pairs")
    if not (tsv or (src and tgt)):
        raise UsageError("an encoder-decoder model trains on translation pairs: give --src and --tgt files "
                         "(one sentence a line) or --pairs FILE.tsv")
    t0 = time.perf_counter()
    train_pairs = read_parallel(src, tgt) if not tsv else read_parallel(tsv=tsv)
    val_src, val_tgt = pick("val_src", "val_src"), pick("val_tgt", "val_tgt")
    if bool(val_src) != bool(val_tgt):
        raise UsageError("give both --val-src and --val-tgt, or neither")
    if val_src:
        val_pairs = read_parallel(val_src, val_tgt)
    else:  # hold out a seeded random slice of the training pairs
        fraction = data_sec.get("val_fraction", 0.05)
        order = np.random.default_rng(0).permutation(len(train_pairs))
        n_val = max(1, int(len(train_pairs) * fraction))
        val_pairs = [train_pairs[i] for i in order[:n_val]]
        train_pairs = [train_pairs[i] for i in order[n_val:]]
    if not train_pairs or not val_pairs:
        raise UsageError("translation data needs at least one training and one validation pair")
    prefix = args.source_prefix or data_sec.get("source_prefix")
    if prefix:  # T5's text-to-text format: the task is named in the input
        data_sec["source_prefix"] = prefix
        train_pairs = [(prefix + s, t) for s, t in train_pairs]
        val_pairs = [(prefix + s, t) for s, t in val_pairs]
    if tokenizer is None:
        kind = args.tokenizer or data_sec.get("tokenizer", "bpe")
        texts = [s for s, _ in train_pairs] + [t for _, t in train_pairs]
        tokenizer = Tokenizer.train(kind, texts, vocab_size=args.vocab_size or data_sec.get("vocab_size", 8000))
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


def _prepare_sentences(args, data_sec: dict, tokenizer, data_dir: Path, max_len: int):
    """Masked-LM pretraining data: a text file (one sentence a line, blank lines between
    documents) -> a WordPiece tokenizer (unless given) -> tokenised sentences."""
    from .data.sentences import prepare_sentences
    from .tokenizers import Tokenizer
    if args.src or args.tgt or args.pairs:
        raise UsageError("--src/--tgt/--pairs are translation data; an encoder pretrains on --data TEXT")
    corpus = resolve_corpus(args.data or data_sec.get("path") or "shakespeare")
    t0 = time.perf_counter()
    if tokenizer is None:
        kind = args.tokenizer or data_sec.get("tokenizer", "wordpiece")
        tokenizer = Tokenizer.train(kind, [str(corpus)], vocab_size=args.vocab_size or data_sec.get("vocab_size", 8000))
    segmenter = _segmenter(data_sec.get("segmenter"))
    info = prepare_sentences(corpus, tokenizer, data_dir, val_fraction=data_sec.get("val_fraction", 0.1),
                             segmenter=segmenter)
    if info.val_path is None:
        raise UsageError(f"{corpus}: too little text to hold out validation sentences")
    tokenizer.save(data_dir / "tokenizer.json")
    print(f"data: {corpus} -> {tokenizer.kind} tokenizer, {tokenizer.vocab_size} tokens in vocabulary; "
          f"{info.train_sentences:,} train sentences in {info.train_docs:,} documents, {info.val_sentences:,} val "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return tokenizer


DATA_OPTIONS = ("objective", "whole_word", "segmenter", "source_prefix")  # kept with a run for --resume


def _prepare_denoising(args, data_sec: dict, tokenizer, data_dir: Path):
    """Encoder-decoder pretraining text: a BPE tokenizer with <mask> and T5's sentinels
    (unless given), token shards as for language models."""
    from .tokenizers import Tokenizer
    from .tokenizers.sentinels import add_sentinels, sentinel_ids
    from .tokenizers.special import SPECIAL_TOKENS
    if args.src or args.tgt or args.pairs:
        raise UsageError("give either --data (denoising pretraining) or translation pairs, not both")
    data_sec.setdefault("objective", args.objective or "span_corruption")
    if tokenizer is None:
        corpus = resolve_corpus(args.data or data_sec["path"])
        tokenizer = Tokenizer.train(args.tokenizer or data_sec.get("tokenizer", "bpe"), [str(corpus)],
                                    vocab_size=args.vocab_size or data_sec.get("vocab_size", 8000),
                                    special_tokens={**SPECIAL_TOKENS, "mask": "<mask>"})
    if data_sec["objective"] == "span_corruption" and len(sentinel_ids(tokenizer)) < 2:
        tokenizer = add_sentinels(tokenizer, 100)
    return _prepare_text(args, data_sec, tokenizer, data_dir, 0)


def _segmenter(name: str | None):
    """A word segmenter for whole-word masking of Chinese (``jieba``), or None."""
    if not name:
        return None
    if name != "jieba":
        raise UsageError(f"data.segmenter: unknown segmenter {name!r}; known: jieba")
    try:
        import jieba
    except ImportError:
        raise UsageError("data.segmenter 'jieba' needs the jieba package: pip install jieba") from None
    return lambda text: list(jieba.cut(text))


def _denoising_data(model_cfg, tokenizer, data_dir: Path, train_cfg, objective_name: str | None, ctx=None):
    """(train, val, objective) for T5 span corruption or BART denoising over text windows."""
    from .objectives.denoising import DENOISING_SALT, DenoisingObjective, SpanCorruptionObjective
    from .tokenizers.sentinels import sentinel_ids
    ids = tokenizer.special_ids
    start = model_cfg.decoder_start_token_id if model_cfg.decoder_start_token_id is not None else ids.get("bos")
    if ids.get("pad") is None or ids.get("eos") is None or start is None:
        raise UsageError("denoising pretraining needs a tokenizer with pad and eos tokens and a decoder start token")
    if train_cfg.seq_len + 1 > model_cfg.max_seq_len:
        raise UsageError(f"seq_len {train_cfg.seq_len} + 1 (the end token) exceeds the model's max_seq_len "
                         f"{model_cfg.max_seq_len}")
    common = dict(pad_id=ids["pad"], start_id=start, eos_id=ids["eos"], label_smoothing=train_cfg.label_smoothing)
    if (objective_name or "span_corruption") == "span_corruption":
        objective = SpanCorruptionObjective(sentinel_ids(tokenizer), **common)
    else:
        if ids.get("mask") is None:
            raise UsageError("BART denoising needs a <mask> token in the tokenizer")
        ends = [i for i in (tokenizer.token_to_id(p) for p in (".", "!", "?", "。", "！", "？")) if i is not None]
        objective = DenoisingObjective(ids["mask"], sentence_ends=ends, **common)
    return (*_seeded_windows(data_dir, train_cfg, ctx, trim_last=True, salt=DENOISING_SALT), objective)


def _seeded_windows(data_dir: Path, train_cfg, ctx, trim_last: bool = False, salt: tuple[int, ...] = ()):
    """(train, val) random windows of the token shards, each row with a seed for the objective's
    randomness (objectives.base.SeededWindows); this rank's share of the batch under torchrun."""
    from .data import TokenShards, WindowSampler
    from .objectives.base import SeededWindows
    from .training.distributed import SINGLE
    ctx = ctx or SINGLE
    window = lambda split, seed: SeededWindows(WindowSampler(  # noqa: E731
        TokenShards(data_dir, split), train_cfg.batch_size // ctx.world_size, train_cfg.seq_len, seed,
        rank=ctx.rank, world_size=ctx.world_size), seed, trim_last=trim_last, salt=salt)
    return window("train", train_cfg.seed), window("val", train_cfg.seed + 1)


GLM_GMASK_PROB = 0.3  # tfamily train: share of GLM rows blanked the gMASK way (a long suffix), the rest by [MASK]s


def _prepare_glm(args, data_sec: dict, tokenizer, data_dir: Path, max_len: int):
    """GLM pretraining data: token shards as for a decoder, from a tokenizer (unless given)
    that also has GLM's [MASK], [S], [E] and [gMASK]."""
    from .tokenizers import Tokenizer
    from .tokenizers.special import GLM_SPECIAL_TOKENS, WORDPIECE_SPECIAL_TOKENS
    if tokenizer is None and not (args.src or args.tgt or args.pairs):  # (those _prepare_text refuses)
        corpus = resolve_corpus(args.data or data_sec.get("path") or "shakespeare")
        kind = args.tokenizer or data_sec.get("tokenizer", "char")
        specials = GLM_SPECIAL_TOKENS
        if kind == "wordpiece":  # BERT's names, plus the span tokens
            specials = {**WORDPIECE_SPECIAL_TOKENS, **{r: GLM_SPECIAL_TOKENS[r] for r in ("span_start", "span_end", "gmask")}}
        tokenizer = Tokenizer.train(kind, [str(corpus)], vocab_size=args.vocab_size or data_sec.get("vocab_size", 4096),
                                    special_tokens=specials)
    return _prepare_text(args, data_sec, tokenizer, data_dir, max_len)


def _glm_data(model_cfg, tokenizer, data_dir: Path, train_cfg, data_sec: dict, ctx=None):
    """GLM: random windows of the token shards, each blanked by the GLM objective from a seed
    its row carries, so resumed runs see the same blanks."""
    from .objectives.glm import GLMObjective
    objective = GLMObjective.from_tokenizer(tokenizer, gmask_prob=data_sec.get("gmask_prob", GLM_GMASK_PROB),
                                            max_len=model_cfg.max_seq_len)
    return (*_seeded_windows(data_dir, train_cfg, ctx), objective)


PREPARE = {"decoder": _prepare_text, "encoder": _prepare_sentences, "encoder-decoder": _prepare_pairs}
PREPARE["glm"] = _prepare_glm  # token shards from a tokenizer with [MASK] [S] [E] [gMASK]
PREPARE["transformer-xl"] = _prepare_text  # token shards; windows of seq_len run as segments of max_seq_len


def _training_data(model_cfg, tokenizer, data_dir: Path, train_cfg, data_sec: dict | None = None, ctx=None):
    """(train batches, val batches, objective) for the model's architecture. Under torchrun
    (``ctx``) each rank's samplers draw its own rows of the same global batch."""
    from .training.distributed import SINGLE
    ctx = ctx or SINGLE
    if train_cfg.batch_size % (ctx.world_size * train_cfg.grad_accum):
        raise UsageError(f"batch_size {train_cfg.batch_size} must split evenly over {ctx.world_size} processes x "
                         f"{train_cfg.grad_accum} micro-batches")
    per_rank, shard = train_cfg.batch_size // ctx.world_size, dict(rank=ctx.rank, world_size=ctx.world_size)
    if model_cfg.arch == "encoder":
        from .data.sentences import SentencePairSampler, Sentences
        from .objectives.mlm import MaskedLMObjective
        objective = MaskedLMObjective.from_tokenizer(tokenizer, whole_word=bool((data_sec or {}).get("whole_word")),
                                                     nsp_weight=1.0 if model_cfg.nsp else 0.0)
        load = lambda split: Sentences.load(data_dir / f"{split}.sentences.safetensors")  # noqa: E731
        train = SentencePairSampler(load("train"), per_rank, train_cfg.seq_len, train_cfg.seed, **shard)
        val = SentencePairSampler(load("val"), per_rank, train_cfg.seq_len, train_cfg.seed + 1, **shard)
        return train, val, objective
    if model_cfg.arch == "encoder-decoder" and not (data_dir / PAIRS_FILE.format(split="train")).is_file():
        return _denoising_data(model_cfg, tokenizer, data_dir, train_cfg, (data_sec or {}).get("objective"), ctx)
    if model_cfg.arch == "encoder-decoder":
        from .data.parallel import TokenBatches, TokenPairs
        from .objectives import Seq2SeqObjective
        for role in ("pad", "bos", "eos"):
            if tokenizer.special_ids.get(role) is None:
                raise UsageError(f"translation needs a tokenizer with a {role} token")
        budget = train_cfg.batch_tokens or DEFAULT_BATCH_TOKENS
        train = TokenBatches(TokenPairs.load(data_dir / PAIRS_FILE.format(split="train")), budget, train_cfg.seed,
                             **shard)
        val = TokenBatches(TokenPairs.load(data_dir / PAIRS_FILE.format(split="val")), budget, shuffle=False, **shard)
        start = model_cfg.decoder_start_token_id
        objective = Seq2SeqObjective(tokenizer.pad_id, tokenizer.bos_id if start is None else start,
                                     tokenizer.eos_id, train_cfg.label_smoothing)
        return train, val, objective
    if model_cfg.arch == "glm":
        return _glm_data(model_cfg, tokenizer, data_dir, train_cfg, data_sec or {}, ctx)
    from .data import TokenShards, WindowSampler
    from .objectives import CausalLMObjective
    train = WindowSampler(TokenShards(data_dir, "train"), per_rank, train_cfg.seq_len, train_cfg.seed, **shard)
    val = WindowSampler(TokenShards(data_dir, "val"), per_rank, train_cfg.seq_len, train_cfg.seed + 1, **shard)
    return train, val, CausalLMObjective(train_cfg.label_smoothing)


# ---------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------
def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder (e.g. runs/x/checkpoint)")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch; default: a newline)")
    p.add_argument("--max-tokens", type=int, default=200, help="new tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--show-probs", action="store_true",
                   help="after the text, a table of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token with --show-probs")
    p.add_argument("--json", action="store_true", help="print the generations (with per-token data) as JSON")
    add_weights_arg(p)


WEIGHTS_HELP = ("number format of the weights while generating: fp32 (default, exact), bf16 (1.5-1.7x "
                "fp32's speed at batch 1 on a CPU with bf16, 1.4x at batch 8), int8 (weight-only, CPU, "
                "1.7-2.0x at batch 1); bf16 and int8 change the probabilities slightly, see benchmarks/RESULTS.md")


def add_weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=["fp32", "bf16", "int8"], default="fp32", help=WEIGHTS_HELP)


def load_for_inference(path: str, weights: str = "fp32", pack: bool = True):
    """(model, tokenizer) ready to run: weights in ``weights`` and, with ``pack``, its linear
    layers packed for oneDNN (``nn.quant.convert_weights``: faster, but no gradients)."""
    from .checkpoint import CheckpointError, load_model
    from .nn.quant import convert_weights
    from .tokenizers import Tokenizer
    try:
        model, cfg, tok_json = load_model(path)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    if tok_json is None:
        raise UsageError(f"{path} has no tokenizer.json; text generation needs one")
    try:
        model = convert_weights(model, weights, pack=pack)
    except ValueError as e:
        raise UsageError(f"--weights {weights}: {e}") from None
    return model, Tokenizer.from_str(tok_json, where=Path(path) / "tokenizer.json")


def checkpoint_tokenizer(path, cfg):
    """The checkpoint's tokenizer, checked against its config (ids within the embedding)."""
    from .checkpoint import read_tokenizer
    from .tokenizers import Tokenizer
    text = read_tokenizer(path, cfg)
    if text is None:
        raise UsageError(f"{path} has no tokenizer.json")
    return Tokenizer.from_str(text, where=Path(path) / "tokenizer.json")


def require_generation(command: str, path: str, model) -> None:
    """generate, chat and fewshot decode with the family's decoding State and its LM head:
    refuse, in one line naming the checkpoint and its family, a model that has neither
    (a BERT-style encoder, a fine-tuned classifier)."""
    from .generation.decode import STATES
    cfg = model.cfg
    if cfg.arch in STATES and cfg.head == "lm":
        return
    head = f" with a {cfg.head!r} head" if cfg.head != "lm" else ""
    raise UsageError(f"{path} holds a model of family {cfg.arch!r}{head}, which does not generate text; {command} "
                     f"needs one of the families {', '.join(sorted(STATES))} with its language-model head (an "
                     "encoder gives embeddings with `tfamily embed` / `knn`, or is fine-tuned with `tfamily finetune`)")


def load_any(path: str, pack: bool = True):
    """(model, tokenizer) from a tfamily checkpoint or, converted on the fly, a Hugging Face
    folder (its config.json names a ``model_type``). ``pack=False`` for a model that will be
    trained (see ``load_for_inference``)."""
    config = Path(path) / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            is_hf = isinstance(data, dict) and "model_type" in data
        except (OSError, ValueError):  # unreadable or not JSON: read_config says what is wrong with it
            is_hf = False
        if is_hf:
            from .interop import import_hf
            from .tokenizers import Tokenizer
            model, tok_json = import_hf(path)
            if tok_json is None:
                raise UsageError(f"{path} has no tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt)")
            tok_file = Path(path) / "tokenizer.json"
            return model, Tokenizer.from_str(tok_json, where=tok_file if tok_file.is_file() else path)
    return load_for_inference(path, pack=pack)


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import SamplingParams, generate
    from .generation.show import format_steps, shade

    model, tokenizer = load_for_inference(args.checkpoint, args.weights)
    require_generation("generate", args.checkpoint, model)
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                            top_alternatives=args.alternatives)
    prompts = args.prompt or ["\n"]  # a line break: a neutral start for a model trained on plain text
    results = generate(model, tokenizer, prompts, params, stop=args.stop)
    if args.json:
        print(json.dumps([{"prompt": r.prompt, "text": r.text, "finish_reason": r.finish_reason,
                           "tokens": [{"token": tokenizer.token_text(s.token), "id": s.token, "prob": s.prob,
                                       "alternatives": [{"token": tokenizer.token_text(t), "id": t, "prob": p}
                                                        for t, p in s.alternatives]} for s in r.steps]}
                          for r in results], ensure_ascii=False, indent=1))
        return 0
    color = sys.stdout.isatty()
    for r in results:
        if args.show_probs:
            print(r.prompt + shade(r.steps, tokenizer, color))
            print()
            print(format_steps(r.steps, tokenizer))
        else:
            print(r.prompt + r.text)
        if len(results) > 1:
            print("-" * 60)
    return 0


# ---------------------------------------------------------------------------------------
# chat
# ---------------------------------------------------------------------------------------
def add_chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder (its chat_template.jinja is used when present)")
    p.add_argument("--system", default=None, help="system prompt that sets up the assistant")
    p.add_argument("--message", action="append", default=[],
                   help="a user turn (repeatable); without it, chat interactively on stdin")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-probs", action="store_true", help="after each reply, its per-token probability table")
    add_weights_arg(p)


def _chat_reply(model, tokenizer, template, messages, params, stop, show_probs: bool, out) -> str:
    """Generate one assistant turn, printing it as it streams; returns its text."""
    from .generation import generate
    from .generation.chat import render_chat
    from .generation.show import format_steps

    history = list(messages)
    while True:  # drop the oldest exchanges until the prompt and the reply fit the context
        prompt = render_chat(history, template)
        n_prompt = len(tokenizer.encode(prompt))
        first_turn = 1 if history and history[0]["role"] == "system" else 0
        if n_prompt + params.max_new_tokens <= model.cfg.max_seq_len or len(history) - first_turn <= 1:
            break
        del history[first_turn:first_turn + 2]
    def show(step) -> None:
        if step.token not in params.stop_token_ids:
            out.write(tokenizer.token_text(step.token))
            out.flush()

    (reply,) = generate(model, tokenizer, [prompt], params, stop, on_step=show)
    out.write("\n")
    if show_probs:
        out.write(format_steps([s for s in reply.steps if s.token not in params.stop_token_ids], tokenizer) + "\n")
    return reply.text.strip()


def cmd_chat(args: argparse.Namespace) -> int:
    from .checkpoint import read_chat_template
    from .generation import SamplingParams
    from .generation.chat import DEFAULT_STOP, end_of_turn_ids

    model, tokenizer = load_for_inference(args.checkpoint, args.weights)
    require_generation("chat", args.checkpoint, model)
    template = read_chat_template(args.checkpoint)
    stop = () if template else DEFAULT_STOP
    eot = end_of_turn_ids(tokenizer)
    budget = min(args.max_tokens, max(1, model.cfg.max_seq_len // 2))
    params = SamplingParams(max_new_tokens=budget, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed, stop_token_ids=eot)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = not args.message
    turns = iter(args.message) if args.message else None
    out = sys.stdout
    while True:
        if interactive:
            try:
                line = input("you> " if sys.stdin.isatty() else "")
            except EOFError:
                return 0
            if not line.strip():
                continue
        else:
            line = next(turns, None)
            if line is None:
                return 0
            out.write(f"you> {line}\n")
        messages.append({"role": "user", "content": line})
        out.write("assistant> ")
        reply = _chat_reply(model, tokenizer, template, messages, params, stop, args.show_probs, out)
        messages.append({"role": "assistant", "content": reply})


# ---------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------
def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder")
    p.add_argument("--data", help="language models: a UTF-8 text file or a bundled corpus name (perplexity); "
                                  "fine-tuned classifiers / taggers: labelled examples (TSV / CoNLL)")
    p.add_argument("--src", help="translation models: source sentences, one a line (.gz is fine)")
    p.add_argument("--ref", help="translation models: reference translations, aligned with --src (BLEU, chrF)")
    p.add_argument("--beam", type=int, default=5, help="translation: beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="translation: length penalty (default 1.0)")
    p.add_argument("--output", help="translation: also write the hypotheses here, one a line")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--stride", type=int, default=None, help="window step in tokens (default: half the context)")
    p.add_argument("--max-chars", type=int, default=None, help="score only the first N characters")
    p.add_argument("--mem-len", type=int, default=None,
                   help="transformer-xl: memory in tokens carried between segments (default: the model's; 0 = none)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import perplexity

    if args.output:  # before the work, so a refusal costs nothing
        _refuse_overwrite(args.output, args.force)

    model, tokenizer = load_for_inference(args.checkpoint)
    if model.cfg.arch == "encoder-decoder":
        return _eval_translation(args, model, tokenizer)
    if model.cfg.head in ("sequence_classification", "token_classification", "span"):
        return _eval_task(args, model, tokenizer)
    if model.cfg.arch == "encoder":
        raise UsageError(f"perplexity needs a causal model, and {args.checkpoint} holds a model of family "
                         f"{model.cfg.arch!r}; score an encoder through a fine-tuned checkpoint (tfamily finetune) "
                         "or its embeddings (tfamily knn)")
    if not args.data:
        raise UsageError("--data is required: the text to measure perplexity on")
    path = resolve_corpus(args.data)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e}") from None
    if args.max_chars:
        text = text[: args.max_chars]
    if model.cfg.arch == "transformer-xl":  # segment by segment, carrying the memory (Dai et al. 2019)
        return _eval_segments(args, model, tokenizer.encode(text), path, len(text.encode("utf-8")))
    r = perplexity(model, tokenizer.encode(text), stride=args.stride, text_bytes=len(text.encode("utf-8")))
    if args.json:
        print(json.dumps({"tokens": r.tokens, "nll": r.nll, "perplexity": r.perplexity, "bits_per_byte": r.bits_per_byte}))
    else:
        print(f"{path}: {r.tokens:,} tokens scored, loss {r.nll:.4f} nats/token, perplexity {r.perplexity:.3f}, "
              f"{r.bits_per_byte:.4f} bits/byte")
    return 0


def _eval_segments(args: argparse.Namespace, model, ids: list[int], path: Path, text_bytes: int) -> int:
    """Transformer-XL perplexity: segments of the model's max_seq_len, the memory carried along."""
    from .evaluation import segment_perplexity
    if args.stride is not None:
        raise UsageError("--stride slides a fixed-context window; a transformer-xl checkpoint scores consecutive "
                         "segments with a memory instead (--mem-len)")
    if args.mem_len is not None and args.mem_len < 0:
        raise UsageError(f"--mem-len must be >= 0, got {args.mem_len}")
    mem_len = model.cfg.mem_len if args.mem_len is None else args.mem_len
    r = segment_perplexity(model, ids, mem_len=mem_len, text_bytes=text_bytes)
    if args.json:
        print(json.dumps({"tokens": r.tokens, "nll": r.nll, "perplexity": r.perplexity,
                          "bits_per_byte": r.bits_per_byte, "segment_len": model.cfg.max_seq_len, "mem_len": mem_len}))
    else:
        print(f"{path}: {r.tokens:,} tokens scored in segments of {model.cfg.max_seq_len} with a memory of {mem_len}, "
              f"loss {r.nll:.4f} nats/token, perplexity {r.perplexity:.3f}, {r.bits_per_byte:.4f} bits/byte")
    return 0


def _eval_task(args: argparse.Namespace, model, tokenizer) -> int:
    """Accuracy / F1 or entity F1 of a fine-tuned checkpoint on a labelled file (--data)."""
    if not args.data:
        raise UsageError("--data is required: labelled examples (a TSV for classifiers, CoNLL for taggers)")
    task = {"sequence_classification": "classify", "token_classification": "tag", "span": "qa"}[model.cfg.head]
    names = model.cfg.extra.get("labels") or [str(i) for i in range(model.cfg.num_labels)]
    examples, _ = _task_data(task, args.data, names)
    scores = task_scores(task, model, tokenizer, examples, names, model.cfg.max_seq_len)
    print(json.dumps(_score_summary(scores)) if args.json else f"{args.data}: {scores.format()}")
    return 0


def _eval_translation(args: argparse.Namespace, model, tokenizer) -> int:
    """Translate --src, score against --ref with sacreBLEU (detokenised: as a user reads it)."""
    from .data.parallel import read_lines
    from .evaluation import bleu
    from .generation import translate

    if not (args.src and args.ref):
        raise UsageError("a translation model is evaluated with --src SOURCES --ref REFERENCES (BLEU and chrF)")
    sources, refs = read_lines(args.src), read_lines(args.ref)
    if len(sources) != len(refs):
        raise UsageError(f"--src has {len(sources)} lines but --ref has {len(refs)}")
    t0 = time.perf_counter()
    hyps = [t.text for t in translate(model, tokenizer, sources, beam_size=args.beam,
                                      length_penalty=args.length_penalty, progress=sys.stderr.isatty())]
    seconds = time.perf_counter() - t0
    if args.output:
        from .files import atomic_write_text
        atomic_write_text(args.output, "".join(h + "\n" for h in hyps))
    r = bleu(hyps, refs)
    if args.json:
        print(json.dumps({"bleu": r.bleu, "chrf": r.chrf, "bleu_signature": r.bleu_signature,
                          "chrf_signature": r.chrf_signature, "sentences": r.sentences, "beam": args.beam,
                          "seconds": round(seconds, 1)}))
    else:
        print(r.format())
        print(f"  beam {args.beam}, length penalty {args.length_penalty:g}; {len(hyps)} sentences in {seconds:.1f}s")
    return 0


# ---------------------------------------------------------------------------------------
# translate
# ---------------------------------------------------------------------------------------
def add_translate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an encoder-decoder checkpoint folder")
    p.add_argument("text", nargs="*", help="sentences to translate (or use --input)")
    p.add_argument("--input", help="a file of sentences, one a line (.gz is fine); '-' reads stdin")
    p.add_argument("--output", help="write translations here, one a line (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="hypotheses are ranked by logprob / length^penalty (default 1.0)")
    p.add_argument("--max-len-a", type=float, default=1.5, help="output length limit: a * source tokens + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--show-probs", action="store_true",
                   help="after each translation, a table of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token with --show-probs")


def cmd_translate(args: argparse.Namespace) -> int:
    from .data.parallel import read_lines
    from .generation import translate
    from .generation.show import format_steps

    if args.output:  # before the work, so a refusal costs nothing
        _refuse_overwrite(args.output, args.force)

    if bool(args.text) == bool(args.input):
        raise UsageError("give the sentences either as arguments or with --input FILE, not both or neither")
    model, tokenizer = load_for_inference(args.checkpoint)
    if model.cfg.arch != "encoder-decoder":
        raise UsageError(f"{args.checkpoint} holds a model of family {model.cfg.arch!r}; translate needs an "
                         "encoder-decoder (e.g. a checkpoint trained with --preset transformer-tiny, t5-tiny or "
                         "bart-tiny)")
    if args.input == "-":
        sentences = [line.rstrip("\r\n") for line in sys.stdin]
    else:
        sentences = read_lines(args.input) if args.input else list(args.text)
    alternatives = args.alternatives if args.show_probs else 0
    results = translate(model, tokenizer, sentences, beam_size=args.beam, length_penalty=args.length_penalty,
                        max_len_a=args.max_len_a, max_len_b=args.max_len_b, top_alternatives=alternatives,
                        progress=bool(args.input) and sys.stderr.isatty())
    if args.output:
        from .files import atomic_write_text
        atomic_write_text(args.output, "".join(r.text + "\n" for r in results))
        print(f"{len(results)} translations written to {args.output}", file=sys.stderr)
        return 0
    for r in results:
        print(r.text)
        if args.show_probs:
            print(format_steps([s for s in r.steps if s.token != tokenizer.eos_id], tokenizer))
    return 0


# ---------------------------------------------------------------------------------------
# finetune, knn
# ---------------------------------------------------------------------------------------
FINETUNE_DEFAULTS = dict(optimizer="adamw", lr=5e-5, batch_size=32, weight_decay=0.01, beta2=0.999,
                         grad_clip=1.0, log_interval=10)
FINETUNE_HELP = {  # where fine-tuning's defaults differ from pretraining's
    "lr": "peak learning rate (default 5e-5)",
    "batch_size": "sequences per optimizer step (default 32)",
    "warmup": "linear warm-up steps (default: 10 %% of the steps)",
    "weight_decay": "decoupled weight decay on matrices (default 0.01)",
    "optimizer": "adamw or muon (Muon on hidden matrices + AdamW) (default adamw)",
}


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("init", help="the pretrained model: a tfamily checkpoint or a Hugging Face folder")
    p.add_argument("--task", choices=["classify", "tag", "qa"], default="classify",
                   help="classify: a label per text (TSV: label<TAB>text[<TAB>text_b]); "
                        "tag: a tag per word (CoNLL: token<TAB>tag, blank line between sentences); "
                        "qa: an answer span in a context (JSONL: question, context, answers)")
    p.add_argument("--train", required=True, help="training examples")
    p.add_argument("--val", required=True, help="validation examples (scored every epoch and at the end)")
    p.add_argument("--test", help="test examples, scored once at the end")
    p.add_argument("--out", required=True, help="run folder: checkpoint, metrics.jsonl, results.json")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training set (default 3)")
    p.add_argument("--max-len", type=int, default=128, help="tokens per example, specials included (default 128)")
    p.add_argument("--pooling", choices=["pooler", "first", "mean", "last"],
                   help="classify: how the text becomes one vector (default: the checkpoint's sentence pooling, "
                        "else BERT's pooler when it has one, else first; last for decoders)")
    for name in ("lr", "batch_size", "warmup", "weight_decay", "optimizer", "max_time", "seed", "threads", "device",
                 "label_smoothing"):
        typ, help_text = TRAIN_FLAGS[name]
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name,
                       help=FINETUNE_HELP.get(name, help_text))
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _task_data(task: str, path: str, names: list[str] | None = None):
    """(examples, label names) of a classification TSV or a CoNLL file, with ids in ``names`` order."""
    from .data.labelled import read_conll, read_labelled_tsv
    if task == "qa":
        from .data.qa import read_qa_jsonl
        return read_qa_jsonl(path), ["start", "end"]
    if task == "classify":
        data = read_labelled_tsv(path)
        names = names or data.label_names
        ids = data.label_ids(names).tolist()
        texts_b = data.texts_b or [None] * len(data)
        return [(t, b, i) for t, b, i in zip(data.texts, texts_b, ids)], names
    data = read_conll(path)
    names = names or data.tag_names
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({t for tags in data.tags for t in tags} - set(index))
    if unknown:
        raise UsageError(f"{path}: tag(s) {', '.join(unknown)} never appear in the training data")
    return [(tokens, [index[t] for t in tags]) for tokens, tags in zip(data.tokens, data.tags)], names


def _default_pooling(model) -> str:
    from .evaluation.embeddings import default_pooling
    if model.cfg.arch == "decoder":
        return "last"
    saved = model.cfg.extra.get("sentence_embedding") if isinstance(model.cfg.extra, dict) else None
    if saved:
        return default_pooling(model)
    return "pooler" if getattr(model, "pooler", None) is not None else "first"


def task_scores(task: str, model, tokenizer, examples, names: list[str], max_len: int):
    """Accuracy / F1 (classify), entity-level F1 (tag), or exact match / F1 (qa) of ``model``."""
    from .evaluation.classification import classification_scores, entity_f1, qa_scores
    from .evaluation.tasks import predict_answers, predict_classes, predict_tags
    model.eval()
    if task == "qa":
        return qa_scores(predict_answers(model, tokenizer, examples, max_len), [e.answers or [""] for e in examples])
    if task == "classify":
        has_b = any(e[1] is not None for e in examples)
        pred = predict_classes(model, tokenizer, [e[0] for e in examples],
                               [e[1] or "" for e in examples] if has_b else None, max_len)
        return classification_scores([names[p] for p in pred], [names[e[2]] for e in examples],
                                     positive=_positive(names))
    pred = predict_tags(model, tokenizer, [e[0] for e in examples], max_len)
    return entity_f1([[names[t] for t in p] for p in pred], [[names[t] for t in e[1]] for e in examples])


def _positive(names: list[str]) -> str | None:
    """The positive class of a binary task, when its name says so."""
    for candidate in ("pos", "positive", "fresh", "1", "true", "yes"):
        if len(names) == 2 and candidate in names:
            return candidate
    return None


def cmd_finetune(args: argparse.Namespace) -> int:
    import math

    import torch

    from .data.inputs import ExampleBatches
    from .models import build_model
    from .objectives.classification import SequenceClassificationObjective, TokenClassificationObjective
    from .training import TrainConfig, Trainer

    out = Path(args.out)
    if (out / "checkpoint").exists() and not args.force:
        raise UsageError(f"{out} already holds a checkpoint; choose another --out, or pass --force to start over")
    if args.force:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    pretrained, tokenizer = load_any(args.init, pack=False)  # its weights seed a model that trains
    if pretrained.cfg.arch not in ("encoder", "decoder"):
        raise UsageError(f"fine-tuning heads sit on an encoder or a decoder; {args.init} is {pretrained.cfg.arch!r}")
    train_examples, names = _task_data(args.task, args.train)
    val_examples, _ = _task_data(args.task, args.val, names)
    test_examples = _task_data(args.task, args.test, names)[0] if args.test else None
    max_len = min(args.max_len, pretrained.cfg.max_seq_len)
    head = {"classify": "sequence_classification", "tag": "token_classification", "qa": "span"}[args.task]
    pooling = args.pooling or (_default_pooling(pretrained) if args.task == "classify" else pretrained.cfg.pooling)
    cfg = pretrained.cfg.replace(head=head, num_labels=len(names), pooling=pooling,
                                 extra={**pretrained.cfg.extra, "labels": names, "task": args.task,
                                        "finetuned_from": str(args.init)})
    torch.manual_seed(args.seed if args.seed is not None else 1337)
    model = build_model(cfg)
    missing, _ = model.load_state_dict(pretrained.state_dict(), strict=False)
    not_loaded = [k for k in missing if k.startswith("backbone.")]
    if not_loaded:
        raise UsageError(f"{args.init}: the backbone weights do not fit ({not_loaded[:3]} ...)")
    fresh = sorted({k.rsplit(".", 1)[0] for k in missing})
    given = {k: getattr(args, k) for k in ("lr", "batch_size", "warmup", "weight_decay", "optimizer", "max_time",
                                           "seed", "threads", "device", "label_smoothing", "bf16")
             if getattr(args, k) is not None}
    batch_size = given.get("batch_size", FINETUNE_DEFAULTS["batch_size"])
    per_epoch = max(1, len(train_examples) // batch_size)
    steps = max(1, math.ceil(args.epochs * per_epoch))
    train_cfg = TrainConfig.from_dict({**FINETUNE_DEFAULTS, "steps": steps, "warmup": max(1, steps // 10),
                                       "eval_interval": per_epoch, "eval_batches": 10**6, "out_dir": str(out),
                                       "progress": not args.no_progress, **given})
    if args.task == "qa":
        from .objectives.span import SpanObjective
        objective = SpanObjective(tokenizer, max_len)
    else:
        objective_cls = SequenceClassificationObjective if args.task == "classify" else TokenClassificationObjective
        objective = objective_cls(tokenizer, max_len, train_cfg.label_smoothing)
    trainer = Trainer(model, cfg, objective, ExampleBatches(train_examples, batch_size, train_cfg.seed),
                      ExampleBatches(val_examples, 64, shuffle=False), train_cfg, tokenizer_json=tokenizer.to_str(),
                      extra_state={"task": args.task, "init": str(args.init)})
    print(f"fine-tuning {args.init} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"new: {', '.join(fresh)}) to {args.task}"
          + (f" {len(names)} classes" if args.task != "qa" else "") + f" on {len(train_examples):,} examples: "
          f"{steps} steps of {batch_size} ({args.epochs:g} epochs), {train_cfg.optimizer} lr {train_cfg.lr:g}"
          + (f", pooling {pooling}" if args.task == "classify" else ""), file=sys.stderr)
    t0 = time.perf_counter()
    best = fit_keeping_best_epoch(trainer, per_epoch, lambda: task_scores(args.task, trainer.model, tokenizer,
                                                                           val_examples, names, max_len))
    seconds = time.perf_counter() - t0
    results = {"task": args.task, "labels": names, "train_examples": len(train_examples), "steps": trainer.step,
               "train_seconds": round(seconds, 1), "val_by_epoch": best.history}
    model_dir = out / "checkpoint"
    if best.state is not None:  # an earlier epoch scored better on val: it is the model, saved apart
        from .checkpoint import save_checkpoint
        trainer.model.load_state_dict(best.state)
        model_dir = save_checkpoint(out / "best", trainer.model, cfg, tokenizer.to_str())
        print(f"epoch {best.epoch} scored best on val ({best.score:.4f}); its weights: {model_dir}", file=sys.stderr)
    results["model"], results["best_epoch"] = str(model_dir), best.epoch
    for split, examples in (("val", val_examples), ("test", test_examples)):
        if examples:
            scores = task_scores(args.task, trainer.model, tokenizer, examples, names, max_len)
            print(f"{split}: {scores.format()}")
            results[split] = _score_summary(scores)
    from .files import atomic_write_text
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(f"model: {model_dir}   results: {out / 'results.json'}   ({seconds:.0f}s)")
    return 0


@dataclass
class BestEpoch:
    epoch: int = 0
    score: float = -math.inf
    state: dict | None = None  # weights of the best epoch when it is not the last one, else None
    history: list = field(default_factory=list)  # [{"epoch", "step", "score"}]


def headline(scores) -> float:
    """The one number epochs are compared by: accuracy (classify), F1 (tag, qa)."""
    return scores.accuracy if hasattr(scores, "accuracy") else scores.f1


def fit_keeping_best_epoch(trainer, per_epoch: int, score_val) -> BestEpoch:
    """Train epoch by epoch (one schedule over the whole run), scoring the task metric on val
    after each; keep a copy of the best epoch's weights. Val loss falls behind accuracy as a
    fine-tuned model grows confident, so the epoch is chosen by the metric itself. Scoring
    time counts against the trainer's time budget."""
    best = BestEpoch()
    epoch = 0
    while trainer.step < trainer.cfg.steps and not trainer.out_of_time():
        epoch += 1
        result = trainer.fit(until=min(trainer.cfg.steps, epoch * per_epoch))
        t0 = time.perf_counter()
        score = headline(score_val())
        trainer.model.train()
        trainer.elapsed += time.perf_counter() - t0
        best.history.append({"epoch": epoch, "step": trainer.step, "score": round(score, 4)})
        print(f"epoch {epoch} (step {trainer.step}): val {score:.4f}", file=sys.stderr)
        if score > best.score:
            best.epoch, best.score = epoch, score
            snapshot = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if result["interrupted"]:
            break
    if best.epoch and best.epoch != epoch:
        best.state = snapshot
    return best


def _score_summary(scores) -> dict:
    if hasattr(scores, "exact_match"):
        return {"exact_match": scores.exact_match, "f1": scores.f1, "n": scores.n}
    if hasattr(scores, "accuracy"):
        return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "f1": scores.positive_f1, "n": scores.n}
    return {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1, "sentences": scores.sentences}


def add_knn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the encoder that embeds: a tfamily checkpoint or a Hugging Face folder")
    p.add_argument("--train", required=True, help="labelled texts (TSV: label<TAB>text): the kNN 'model'")
    p.add_argument("--test", required=True, help="labelled texts to classify and score")
    p.add_argument("--k", type=int, default=5, help="neighbours that vote (default 5)")
    p.add_argument("--pooling", choices=["mean", "first", "pooler", "last"], help="as for `tfamily embed`")


def cmd_knn(args: argparse.Namespace) -> int:
    from .evaluation.classification import classification_scores
    from .evaluation.embeddings import embed_texts, knn_predict

    model, tokenizer = load_any(args.model)
    train, names = _task_data("classify", args.train)
    test, _ = _task_data("classify", args.test, names)
    t0 = time.perf_counter()
    embed = lambda examples: embed_texts(model, tokenizer, [e[0] for e in examples], pooling=args.pooling)  # noqa: E731
    train_vec, test_vec = embed(train), embed(test)
    pred = knn_predict(train_vec, [e[2] for e in train], test_vec, k=args.k)
    scores = classification_scores([names[p] for p in pred], [names[e[2]] for e in test], positive=_positive(names))
    print(f"kNN (k={args.k}) over {len(train):,} embedded training texts: {scores.format()}")
    print(f"({time.perf_counter() - t0:.0f}s)")
    return 0


# ---------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------
def add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a tfamily checkpoint or a Hugging Face folder (e.g. a sentence encoder)")
    p.add_argument("text", nargs="*", help="texts to embed (or use --input)")
    p.add_argument("--input", help="a file of texts, one a line (.gz is fine)")
    p.add_argument("--output", help="write the embeddings here: .npy (an N x d array) or .jsonl (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--pooling", choices=["mean", "first", "pooler", "last"],
                   help="how token states become one vector (default: the checkpoint's own, else mean; "
                        "last for causal decoders)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw length (default: unit vectors)")
    p.add_argument("--batch-size", type=int, default=64)


def cmd_embed(args: argparse.Namespace) -> int:
    from .data.parallel import read_lines
    from .evaluation.embeddings import embed_texts

    if args.output:  # before the work, so a refusal costs nothing
        _refuse_overwrite(args.output, args.force)

    if bool(args.text) == bool(args.input):
        raise UsageError("give the texts either as arguments or with --input FILE, not both or neither")
    model, tokenizer = load_any(args.checkpoint)
    texts = read_lines(args.input) if args.input else list(args.text)
    vectors = embed_texts(model, tokenizer, texts, pooling=args.pooling, normalize=not args.no_normalize,
                          batch_size=args.batch_size)
    if args.output and args.output.endswith(".npy"):
        import numpy as np
        from .files import atomic_write

        def write_npy(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object, so np.save adds no second .npy suffix
                np.save(f, vectors.numpy())
        atomic_write(args.output, write_npy)
    else:
        lines = "".join(json.dumps({"text": t, "embedding": [round(x, 6) for x in v]}, ensure_ascii=False) + "\n"
                        for t, v in zip(texts, vectors.tolist()))
        if args.output:
            from .files import atomic_write_text
            atomic_write_text(args.output, lines)
        else:
            sys.stdout.write(lines)
    if args.output:
        print(f"{len(texts)} embeddings of size {vectors.shape[1]} written to {args.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------
# inspect, presets, interop
# ---------------------------------------------------------------------------------------
def add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a preset name or a checkpoint folder")
    p.add_argument("--batch", type=int, default=8, help="batch size for the memory estimate (default 8)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's context)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "bf16-autocast"], default="fp32",
                   help="training precision for the estimate (bf16-autocast: fp32 weights, bf16 activations)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a preset field")


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import check_checkpoint
    from .inspect import format_report
    from .models import build_model
    from .presets import PRESETS, get_preset

    if Path(args.target).is_dir():
        cfg = check_checkpoint(args.target)  # the report is of these weights: a broken file is an error
    elif args.target in PRESETS:
        cfg = get_preset(args.target).config()
    else:
        raise UsageError(f"{args.target!r} is neither a checkpoint folder nor a preset; "
                         f"presets: {', '.join(sorted(PRESETS))}")
    if args.set:
        cfg = cfg.replace(**{k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)})
    with torch.device("meta"):  # shapes only: inspecting gpt2-xl allocates nothing
        model = build_model(cfg)
    print(format_report(model, seq_len=args.seq_len or cfg.max_seq_len, batch=args.batch, dtype=args.dtype))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import PRESETS
    for name, p in PRESETS.items():
        c = p.config()
        print(f"{name:16s} {c.arch:8s} L={c.n_layer:<3d} d={c.d_model:<5d} H={c.n_head:<3d} ctx={c.max_seq_len:<5d} "
              f"{c.norm_placement}-{c.norm}  {p.notes}")
        print(f"{'':16s} source: {p.source}")
    return 0


def add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_folder", help="a Hugging Face model folder (config.json + safetensors or pytorch_model.bin)")
    p.add_argument("out", help="where to write the tfamily checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def _refuse_overwrite(out: str, force: bool) -> None:
    """Nothing already saved is lost: an existing folder is replaced only with --force."""
    from .files import refuse_overwrite
    refuse_overwrite(out, force)


def cmd_import_hf(args: argparse.Namespace) -> int:
    from .checkpoint import save_checkpoint
    _refuse_overwrite(args.out, args.force)
    from .interop import import_hf
    from .tokenizers.tokenizer import check_tokenizer_json
    model, tok_json = import_hf(args.hf_folder)
    if tok_json is not None:  # a broken tokenizer.json is refused now, not when the checkpoint is next loaded
        tok_file = Path(args.hf_folder) / "tokenizer.json"
        check_tokenizer_json(tok_json, tok_file if tok_file.is_file() else args.hf_folder)
    save_checkpoint(args.out, model, model.cfg, tok_json)
    print(f"imported {args.hf_folder} -> {args.out}")
    return 0


def add_import_gguf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf_file", help="a llama.cpp GGUF file of a Llama-architecture model (quantised or not)")
    p.add_argument("out", help="where to write the tfamily checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def cmd_import_gguf(args: argparse.Namespace) -> int:
    from .checkpoint import save_checkpoint
    from .interop import import_gguf
    _refuse_overwrite(args.out, args.force)
    model, tok_json, chat_template = import_gguf(args.gguf_file)
    save_checkpoint(args.out, model, model.cfg, tok_json, chat_template=chat_template)
    print(f"imported {args.gguf_file} -> {args.out} (weights dequantised to float32)")
    return 0


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a tfamily checkpoint folder")
    p.add_argument("out", help="where to write the Hugging Face folder")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def cmd_export_hf(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .interop import export_hf
    _refuse_overwrite(args.out, args.force)
    model, _, tok_json = load_model(args.checkpoint)
    export_hf(model, args.out, tokenizer_json=tok_json)
    print(f"exported {args.checkpoint} -> {args.out} (Hugging Face format)")
    return 0


# ---------------------------------------------------------------------------------------
# serve, fewshot
# ---------------------------------------------------------------------------------------
def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only). 0.0.0.0 exposes the "
                        "server to the network: anyone who can reach the port can use it, so set --api-key too")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on the API (/v1, /tfamily); /health and the page "
                        "stay open, open the page as /?key=KEY (default: the TFAMILY_API_KEY environment "
                        "variable, which keeps the key out of `ps`; unset: no key)")
    p.add_argument("--model-name", default=None, help="the model id clients name (default: the checkpoint's folder name)")
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most (default 32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_weights_arg(p)


def cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import CheckpointError
    from .server import serve
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.max_batch <= 1024:
        raise UsageError(f"--max-batch must be in [1, 1024], got {args.max_batch}")
    api_key = args.api_key if args.api_key is not None else (os.environ.get("TFAMILY_API_KEY") or None)
    if api_key is not None:
        from .server.api import check_api_key
        try:
            check_api_key(api_key)
        except ValueError as e:
            raise UsageError(f"--api-key (or TFAMILY_API_KEY): {e}; leave it unset for no key") from None

    def banner() -> None:
        print(f"serving {args.checkpoint} on http://{args.host}:{args.port}/ (playground at /, API at /v1"
              f"{', API key required' if api_key else ''})", file=sys.stderr)
        if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: {args.host} is reachable from the network and no --api-key is set: "
                  "anyone who can reach this port can use the server", file=sys.stderr)
    try:
        serve(args.checkpoint, args.host, args.port, model_name=args.model_name, max_batch=args.max_batch,
              device=args.device, weights=args.weights, api_key=api_key, on_ready=banner)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None
    return 0


def add_fewshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder")
    p.add_argument("--instruction", default="", help="what the task is, in words (first line of the prompt)")
    p.add_argument("--example", action="append", default=[], metavar="'INPUT => OUTPUT'",
                   help="a worked example (repeatable)")
    p.add_argument("--examples", metavar="FILE", help='a JSONL file of {"input": ..., "output": ...} examples')
    p.add_argument("--query", required=True, help="the input to answer")
    p.add_argument("--max-tokens", type=int, default=32, help="longest answer in tokens (default 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-prompt", action="store_true", help="print the prompt that was built")


def cmd_fewshot(args: argparse.Namespace) -> int:
    from .generation import SamplingParams, generate
    from .generation.fewshot import fewshot_prompt, fewshot_stop, parse_example

    examples = [parse_example(e) for e in args.example]
    if args.examples:
        path = Path(args.examples)
        if not path.is_file():
            raise UsageError(f"--examples: file {path} not found")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    examples.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UsageError(f"--examples {path}:{n}: not JSON ({e})") from None
    prompt = fewshot_prompt(args.query, examples, args.instruction)
    if args.show_prompt:
        print(prompt, file=sys.stderr)
    model, tokenizer = load_for_inference(args.checkpoint)
    require_generation("fewshot", args.checkpoint, model)
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    (result,) = generate(model, tokenizer, [prompt], params, stop=fewshot_stop())
    print(result.text.strip())
    return 0


# ---------------------------------------------------------------------------------------
# infill
# ---------------------------------------------------------------------------------------
def add_infill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a GLM checkpoint folder")
    p.add_argument("text", nargs="+", help='texts with blanks, e.g. "1 2 [MASK] 4 [MASK] [MASK]"; a final [gMASK] '
                                           "generates a continuation")
    p.add_argument("--max-tokens", type=int, default=32, help="longest filling of one blank, in tokens (default 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-probs", action="store_true",
                   help="after the text, a table per blank of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON line per text: filled text, blanks, per-token data")


def cmd_infill(args: argparse.Namespace) -> int:
    from .generation import SamplingParams
    from .generation.infill import infill
    from .generation.show import format_steps

    model, tokenizer = load_for_inference(args.checkpoint)
    if model.cfg.arch != "glm":
        raise UsageError(f"{args.checkpoint} holds a model of family {model.cfg.arch!r}; infilling needs a GLM "
                         "(e.g. --preset glm-tiny)")
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, top_alternatives=args.alternatives)
    token = lambda i, p: {"id": i, "token": tokenizer.token_text(i), "prob": p}  # noqa: E731
    for text in args.text:
        r = infill(model, tokenizer, text, params)
        if args.json:
            blanks = [{"kind": b.kind, "text": b.text, "finish_reason": b.finish_reason,
                       "tokens": [{**token(s.token, s.prob), "alternatives": [token(i, p) for i, p in s.alternatives]}
                                  for s in b.steps]} for b in r.blanks]
            print(json.dumps({"text": r.text, "blanks": blanks}, ensure_ascii=False))
            continue
        print(r.text)
        if args.show_probs:
            for b in r.blanks:
                print(f"blank {b.index + 1} ({b.kind} at Part A position {b.position}): {b.text!r}, "
                      f"ended by {'[E]' if b.finish_reason == 'stop' else 'the token limit'}")
                print(format_steps(b.steps, tokenizer))
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable | None]] = {
    "train": (cmd_train, "train a model on a text file (tokenizer, shards, trainer, checkpoint)", add_train_args),
    "generate": (cmd_generate, "generate text from a checkpoint, optionally with per-token probabilities",
                 add_generate_args),
    "chat": (cmd_chat, "chat with a checkpoint under a system prompt (its chat template, or a plain one)",
             add_chat_args),
    "translate": (cmd_translate, "translate sentences or a file with an encoder-decoder checkpoint (beam search)",
                  add_translate_args),
    "finetune": (cmd_finetune, "fine-tune a pretrained encoder or decoder to classify texts or tag words",
                 add_finetune_args),
    "knn": (cmd_knn, "k-nearest-neighbour classification over a model's sentence embeddings", add_knn_args),
    "embed": (cmd_embed, "sentence embeddings (mean / [CLS] / pooler / last token) from any checkpoint",
              add_embed_args),
    "eval": (cmd_eval, "perplexity on a text file (language models), or BLEU and chrF on a test set (translation)",
             add_eval_args),
    "inspect": (cmd_inspect, "parameters, FLOPs per token and training memory of a preset or checkpoint",
                add_inspect_args),
    "presets": (cmd_presets, "list the model presets and their sources", None),
    "import-hf": (cmd_import_hf, "convert a Hugging Face model folder into a tfamily checkpoint", add_import_args),
    "import-gguf": (cmd_import_gguf, "convert a llama.cpp GGUF file (Llama architecture) into a tfamily checkpoint",
                    add_import_gguf_args),
    "export-hf": (cmd_export_hf, "write a tfamily checkpoint as a Hugging Face model folder", add_export_args),
    "serve": (cmd_serve, "serve a checkpoint: OpenAI-compatible API and the token-probability playground",
              add_serve_args),
    "fewshot": (cmd_fewshot, "answer a query from an instruction and worked examples (few-shot prompt)",
                add_fewshot_args),
    "infill": (cmd_infill, "fill the [MASK] blanks of a text with a GLM checkpoint, with per-token probabilities",
               add_infill_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfamily", description="Build, train, inspect and sample Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (fn, help_text, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if add_args:
            add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError, FileNotFoundError, ValueError) as e:
        if os.environ.get("TFAMILY_DEBUG"):
            raise
        print(f"tfamily {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
