"""`tfamily inspect` and `presets`: model shapes, costs and the preset list."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, _parse_value


def add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a preset name or a checkpoint folder")
    p.add_argument("--batch", type=int, default=8, help="batch size for the memory estimate (default 8)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's context)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "bf16-autocast"], default="fp32",
                   help="training precision for the estimate (bf16-autocast: fp32 weights, bf16 activations)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a preset field")


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import check_checkpoint
    from ..inspect import format_report
    from ..models import build_model
    from ..presets import PRESETS, get_preset

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
    from ..models.family import family_of
    from ..presets import PRESETS
    for name, p in PRESETS.items():
        c = p.config()
        family = family_of(c).name
        print(f"{name:16s} {family:8s} L={c.n_layer:<3d} d={c.d_model:<5d} H={c.n_head:<3d} ctx={c.max_seq_len:<5d} "
              f"{c.norm_placement}-{c.norm}  {p.notes}")
        print(f"{'':16s} source: {p.source}")
    return 0
