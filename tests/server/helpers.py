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


def family_tokenizer(cfg) -> Tokenizer:
    """A char tokenizer fit to ``cfg``'s family: a GLM's has [MASK] / [S] / [E] / [gMASK], an
    encoder-decoder's and a decoder's <pad> / <unk> / <s> / <|endoftext|>."""
    from tfamily.models.family import family_of
    from tfamily.tokenizers.special import GLM_SPECIAL_TOKENS
    glm = family_of(cfg).prompt == "blanks"
    return Tokenizer.train("char", [TEXT], special_tokens=GLM_SPECIAL_TOKENS if glm else None)


def family_config(cfg, tok: Tokenizer):
    """``cfg`` with the ids its tokenizer fixes: vocabulary, padding, and the token a decoder
    starts from (an encoder-decoder's <s>, a GLM's [S]), as `tfamily train` sets them."""
    from tfamily.models.family import family_of
    fields = dict(family_of(cfg).data_fields(tok, cfg.max_seq_len))
    fields = {k: v for k, v in fields.items() if k != "max_seq_len"}  # the preset's tiny context stays
    return cfg.replace(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, **fields)


def preset_checkpoint(folder: Path, preset: str, seed: int = 0) -> Path:
    """A checkpoint of ``preset``'s tiny version (random weights) with its family's tokenizer."""
    cfg = tiny_version(get_preset(preset).config())
    tok = family_tokenizer(cfg)
    cfg = family_config(cfg, tok)
    torch.manual_seed(seed)
    return save_checkpoint(folder, build_model(cfg).eval(), cfg, tok.to_str())
