"""What a faster number format costs in output quality: the same model in fp32 and in the
format under test, teacher-forced over the same real text, compared position by position.

Greedy tokens of a random-weight model say little (its near-flat distributions flip on any
rounding), so quality is measured on real models (SmolLM2-135M, Qwen2.5-0.5B) over real text: how often
the two pick the same next token, the mean KL divergence of the converted model's
distribution from fp32's, and both perplexities.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Quality:
    tokens: int  # positions compared
    top1_agreement: float  # fraction where both models' most likely next token is the same
    kl: float  # mean KL(fp32 || converted), nats per token
    ppl_fp32: float
    ppl_converted: float

    def describe(self, name: str) -> str:
        return (f"{name}, {self.tokens} tokens of text: top-1 as fp32 {100 * self.top1_agreement:.1f}%, "
                f"KL {self.kl:.4f}, ppl {self.ppl_converted:.2f} vs {self.ppl_fp32:.2f}")


@torch.inference_mode()
def next_token_logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(T-1, V) fp32 log-probabilities of tokens 1..T-1 given the ones before; ids (1, T)."""
    return model(ids).logits[0, :-1].float().log_softmax(-1)


def compare(model: nn.Module, convert: Callable[[nn.Module], nn.Module], ids: torch.Tensor) -> Quality:
    """fp32 ``model`` against ``convert(copy of model)`` on ids (1, T) of real text."""
    return compare_models(model, convert(copy.deepcopy(model)), ids)


def compare_models(model: nn.Module, other: nn.Module, ids: torch.Tensor) -> Quality:
    """fp32 ``model`` against ``other`` (the same model in another format) on ids (1, T)."""
    ref = next_token_logprobs(model, ids)  # (T-1, V)
    new = next_token_logprobs(other, ids)
    targets = ids[0, 1:]
    nll = lambda lp: -lp.gather(1, targets[:, None]).mean()  # noqa: E731
    kl = (ref.exp() * (ref - new)).sum(-1).mean()
    return Quality(tokens=len(targets), top1_agreement=(ref.argmax(-1) == new.argmax(-1)).float().mean().item(),
                   kl=kl.item(), ppl_fp32=nll(ref).exp().item(), ppl_converted=nll(new).exp().item())


TEXT_TOKENS = 512


@functools.lru_cache(maxsize=None)
def gguf_quality(key: str, fmt: str) -> str:
    """Weights in ``fmt`` (bf16, int8, int4: ``tfamily.nn.quant``; gguf: ``import_gguf(weights=
    "gguf")``, the file's own blocks) against fp32 on a real GGUF model (``gguf_models.MODELS``)
    over the opening of the bundled Shakespeare (computed once per run, model and format; the
    note of the rows that decode in that format). GGUF blocks are multiplied by the decoding
    kernel at every position (x rounded to int8 blocks), not by the bf16 matmul that long
    prompts take: the quality of what each generated token sees."""
    from unittest import mock

    from tfamily.data import bundled_corpus
    from tfamily.nn import native

    from .gguf_models import MODELS, load_pair, tfamily_model

    try:
        model, _, tok = load_pair(key)
    except (RuntimeError, OSError) as e:  # the model's package is not installed
        return f"quality not measured: {e}"
    text = bundled_corpus("shakespeare").read_text(encoding="utf-8")[:8000]
    ids = torch.tensor([tok.encode(text)[:TEXT_TOKENS]])
    with mock.patch.object(native, "GGUF_MAX_ROWS", ids.shape[1]):
        quality = compare_models(model, tfamily_model(key, fmt), ids)
    return quality.describe(f"{fmt} weights on {MODELS[key][0]}")


def smollm2_quality(fmt: str) -> str:
    """What ``fmt`` costs on SmolLM2-135M: the note of GPT-2's rows in that format."""
    return gguf_quality("smollm2", fmt)
