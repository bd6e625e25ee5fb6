"""A tiny checkpoint for the server tests: a char tokenizer and a 2-layer GPT (random weights)."""

from pathlib import Path

import torch

from tfamily.checkpoint import save_checkpoint
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version
from tfamily.tokenizers import Tokenizer

TEXT = ("System: Be brief.\n\nUser: hello there\n\nAssistant: general kenobi, you are a bold one.\n\n"
        "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-\n")


def tiny_checkpoint(folder: Path, context: int = 64, seed: int = 0) -> Path:
    tok = Tokenizer.train("char", [TEXT])
    torch.manual_seed(seed)
    cfg = tiny_version(get_preset("gpt-tiny").config()).replace(vocab_size=tok.vocab_size, max_seq_len=context)
    return save_checkpoint(folder, build_model(cfg), cfg, tok.to_str())
