"""`tfamily train`: its flags, the YAML run config and the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .common import UsageError, _parse_value, say


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


def load_run_config(path: str | None) -> dict[str, Any]:
    """A YAML run config: {model: {preset, ...fields}, data: {path, tokenizer, vocab_size}, train: {...}}."""
    if not path:
        return {"model": {}, "data": {}, "train": {}}
    import yaml

    from ..config import ModelConfig
    from ..training import TrainConfig
    from ..training.recipes import DataOptions
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
    for name, fields in (("model", ModelConfig), ("data", DataOptions), ("train", TrainConfig)):
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


DATA_FLAGS = {"path": "data", "src": "src", "tgt": "tgt", "pairs": "pairs", "val_src": "val_src", "val_tgt": "val_tgt",
              "source_prefix": "source_prefix", "tokenizer": "tokenizer", "vocab_size": "vocab_size",
              "objective": "objective"}  # data option -> the train flag that sets it


def _data_options(args: argparse.Namespace, section: dict[str, Any]) -> dict[str, Any]:
    """The run config's data section with the flags laid over it. A flag that names the data
    (--data, or --src/--pairs) replaces the other kind the config may name."""
    given = {key: getattr(args, flag) for key, flag in DATA_FLAGS.items() if getattr(args, flag)}
    opts = dict(section)
    if "path" in given:
        for key in ("src", "tgt", "pairs"):
            opts.pop(key, None)
    if "src" in given or "pairs" in given:
        opts.pop("path", None)
    return {**opts, **given}


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import check_checkpoint, checkpoint_tokenizer, load_trainer_state, read_chat_template
    from ..models import build_model
    from ..presets import get_preset
    from ..tokenizers import Tokenizer
    from ..training import TrainConfig, Trainer
    from ..training.distributed import barrier, finish, from_env
    from ..models.family import family_of
    from ..training.recipes import DATA_OPTIONS, DEFAULT_BATCH_TOKENS, PAIRS_FILE, RECIPES
    from ..training.trainer import CHECKPOINT_DIR

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
        state, _ = load_trainer_state(ckpt, TrainConfig.check_fields)
        data_sec = {**state.get("data_options", {}), **data_sec}  # how the run's batches are built
        if state.get("lora"):
            raise UsageError("LoRA runs save merged weights, not the adapters, so they cannot resume; "
                             f"fine-tune further with --init {ckpt}")
        train_cfg = TrainConfig.from_dict({**state["train_config"], **train_sec, "out_dir": str(out)})
        ctx = from_env(train_cfg.device)
        model_cfg = check_checkpoint(ckpt)  # config.json and the weights' header, before anything is printed
        family = family_of(model_cfg)
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
        family = family_of(model_cfg)
        data_sec = _data_options(args, data_sec)
        data_dir = out / "data"
        ctx = from_env(train_cfg.device)
        if ctx.is_main:  # one process tokenises; under torchrun the others wait and read its tokenizer
            tokenizer = RECIPES[family.recipe].prepare(data_sec, tokenizer, data_dir, model_cfg.max_seq_len)
        barrier(ctx)
        if not ctx.is_main:
            tokenizer = Tokenizer.load(data_dir / "tokenizer.json")
        if not args.init:  # the fields a new model takes from its data (models/family.py)
            fields = {**family.data_fields(tokenizer, train_cfg.seq_len), **model_sec, "vocab_size": tokenizer.vocab_size}
            if tokenizer.pad_id is not None:
                fields.setdefault("pad_token_id", tokenizer.pad_id)
            model_cfg = get_preset(preset).config(**fields)
        if data_sec.get("source_prefix"):
            model_cfg.extra["source_prefix"] = data_sec["source_prefix"]
    recipe = RECIPES[family.recipe]
    # a transformer-xl window longer than its segment runs as segments; translation batches go by tokens
    if not family.windows_past_context and train_cfg.seq_len > model_cfg.max_seq_len:
        raise UsageError(f"seq_len {train_cfg.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}")

    torch.manual_seed(train_cfg.seed)
    if args.init and not args.resume:
        from ..checkpoint import load_model
        model = load_model(args.init)[0].train()
    else:
        model = build_model(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    layers = family.layers(model_cfg)
    say(ctx, f"model: {preset}, {n_params / 1e6:.2f}M parameters, {layers} layers x {model_cfg.d_model} wide")
    if args.lora:
        from ..nn.lora import add_lora
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        trainable = add_lora(model, r=args.lora, alpha=2.0 * args.lora, targets=targets)
        say(ctx, f"LoRA rank {args.lora} on {', '.join(targets)}: {trainable:,} trainable parameters "
                 f"({100 * trainable / n_params:.2f}% of {n_params:,})")
    train, val, objective = recipe.data(model_cfg, tokenizer, data_dir, train_cfg, data_sec, ctx)
    trainer = Trainer(model, model_cfg, objective, train, val, train_cfg, dist=ctx,
                      tokenizer_json=tokenizer.to_str(),
                      extra_state={"data_dir": str(data_dir), "preset": preset, "lora": args.lora or 0,
                                   "data_options": {k: data_sec[k] for k in DATA_OPTIONS if k in data_sec}},
                      chat_template=read_chat_template(args.init or ckpt) if (args.init or args.resume) else None)
    if args.resume:
        trainer.resume(ckpt)
    by_tokens = recipe.by_tokens and (data_dir / PAIRS_FILE.format(split="train")).is_file()  # translation pairs
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
