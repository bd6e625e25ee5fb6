"""Helpers shared by the tests that compare against `transformers` (not a test module)."""

from __future__ import annotations

import warnings

import torch

ATOL = 1e-5  # fp32 logits parity, as the project asks of every family transformers has


def hf_save(model, folder) -> None:
    """save_pretrained without its notices in the test output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)


def random_ids(b: int = 3, t: int = 17, vocab: int = 100, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours, hf, ids: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def randomize_weights(model) -> None:
    """Random weights with the norm gains drawn too (around 1), so that a mix-up of any two
    tensors (gate/up, q/k, the norms, a bias on the wrong projection) changes the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
