"""Helpers shared by several command groups: UsageError, progress lines, --weights, overwrite checks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


class UsageError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""


def say(ctx, message: str) -> None:
    """A progress line on stderr, from rank 0 only under torchrun."""
    if ctx.is_main:
        print(message, file=sys.stderr)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _refuse_overwrite(out: str, force: bool) -> None:
    """Nothing already saved is lost: an existing folder is replaced only with --force."""
    from ..files import refuse_overwrite
    refuse_overwrite(out, force)


WEIGHT_FORMATS = ("fp32", "bf16", "int8", "int4")  # nn.quant.WEIGHT_FORMATS, without importing torch here
WEIGHTS_HELP = ("number format of the weights while generating: fp32 (the default for a checkpoint; exact), bf16 "
                "(1.5-1.7x fp32's speed at batch 1 on a CPU with bf16, 1.4x at batch 8), int8 (weight-only, CPU, "
                "1.7-2.7x at batch 1, depending on the CPU), int4 (weight-only, CPU, groups of 32 with a scale and a zero), gguf (a GGUF "
                "file's own quantised tensors, multiplied as the file stores them; the default for a GGUF file on a "
                "CPU); all but fp32 "
                "change the probabilities slightly, see benchmarks/RESULTS.md")


def add_weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=[*WEIGHT_FORMATS, "gguf"], default=None, help=WEIGHTS_HELP)


MODEL_SOURCE_HELP = ("a checkpoint folder (e.g. runs/x/checkpoint), a llama.cpp GGUF file of a Llama or Qwen2 "
                     "model, or a packaged model's name (qwen2.5-coder-0.5b)")


def announce(note: str | None) -> None:
    """A default the user did not pick, said once at start-up (on stderr: stdout stays the output)."""
    if note:
        print(note, file=sys.stderr)


def require_generation(command: str, path: str, model) -> None:
    """generate, chat and fewshot decode with the family's decoding State and its LM head:
    refuse, in one line naming the checkpoint and its family, a model that has neither
    (a BERT-style encoder, a fine-tuned classifier)."""
    from ..models.family import families_that, family_of
    cfg = model.cfg
    if family_of(cfg).can("generate") and cfg.head == "lm":
        return
    head = f" with a {cfg.head!r} head" if cfg.head != "lm" else ""
    generative = ", ".join(sorted(f.name for f in families_that("generate")))
    raise UsageError(f"{path} holds a model of {family_of(cfg)}{head}, which does not generate text; {command} "
                     f"needs one of the families {generative} with its language-model head (an "
                     "encoder gives embeddings with `tfamily embed` / `knn`, or is fine-tuned with `tfamily finetune`)")


def add_input_args(p: argparse.ArgumentParser, noun: str, output_help: str) -> None:
    """The texts a command reads (arguments or --input), and its --output / --force; see input_texts."""
    p.add_argument("text", nargs="*", help=f"{noun} (or use --input)")
    p.add_argument("--input", help=f"a file of {noun}, one a line (.gz is fine; - reads stdin)")
    p.add_argument("--output", help=output_help)
    p.add_argument("--force", action="store_true", help="replace --output if it exists")


def input_texts(args: argparse.Namespace, noun: str) -> list[str]:
    """A command's texts: given as arguments or with --input FILE (one a line; '-' reads stdin),
    not both. Also refuses an existing --output without --force before any work is done."""
    from ..data.parallel import read_lines
    if getattr(args, "output", None):
        _refuse_overwrite(args.output, args.force)
    if bool(args.text) == bool(args.input):
        raise UsageError(f"give the {noun} either as arguments or with --input FILE, not both or neither")
    if args.input == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    return read_lines(args.input) if args.input else list(args.text)

