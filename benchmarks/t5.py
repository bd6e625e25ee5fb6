"""T5-small training, tfamily vs Hugging Face ``transformers``, on the same random weights.

HF builds ``T5ForConditionalGeneration(T5Config())`` (T5-small: 6 + 6 layers, 512 wide,
60.5M) with dropout 0 from a fixed seed; tfamily loads the same tensors through
``tfamily.interop.hf_t5``. A repetition is one training step on a batch of 8 pairs,
128 source tokens to 128 target tokens: forward, loss, backward, optimizer step, zero_grad.

Both sides see the same tensors. tfamily's ``Seq2SeqObjective`` makes the batch (source +
</s>, decoder input = start + target, targets = target + </s>); HF gets the same source and
``labels`` = those targets, and shifts them right itself into the same decoder input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import T5Config, T5ForConditionalGeneration

from tfamily.objectives import Seq2SeqObjective
from tfamily.training.config import TrainConfig
from tfamily.training.optim import make_optimizers

from .harness import Row, count_flops, free_memory, hf_adamw, interleave, mirror_of, random_ids, training_step

CPU = torch.device("cpu")
LR = 1e-3  # torch.optim.AdamW's default, on both sides


@dataclass
class Sizes:
    batch: int = 8
    src: int = 128  # tokens, </s> included
    tgt: int = 128
    model: dict = field(default_factory=dict)  # T5Config overrides (empty = T5-small)


FULL = Sizes()
QUICK = Sizes(batch=2, src=32, tgt=32, model=dict(num_layers=2, d_model=64, d_kv=16, d_ff=128, num_heads=4))


def build_pair(sizes: Sizes, seed: int = 0):
    hf_cfg = T5Config(dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **sizes.model)
    torch.manual_seed(seed)
    theirs = T5ForConditionalGeneration(hf_cfg)
    return mirror_of(theirs), theirs


def make_batch(cfg, sizes: Sizes):
    """The objective's batch of random pairs; 0 is T5's pad and decoder start, 1 its </s>."""
    objective = Seq2SeqObjective(pad_id=0, start_id=0, eos_id=1)
    src = random_ids(cfg.vocab_size - 2, sizes.batch, sizes.src - 1, seed=4) + 2
    tgt = random_ids(cfg.vocab_size - 2, sizes.batch, sizes.tgt - 1, seed=5) + 2
    return objective, objective.prepare(list(zip(src.numpy(), tgt.numpy())))


def ours_step(model, objective, batch, bf16: bool):
    return training_step(lambda: objective.loss(model(**batch.inputs, defer_head=True), batch),
                         make_optimizers(model, TrainConfig(optimizer="adamw", lr=LR), CPU), bf16)


def hf_loss(model, batch) -> torch.Tensor:
    return model(input_ids=batch.inputs["src_ids"], attention_mask=batch.inputs["src_mask"].long(),
                 labels=batch.targets).loss


def hf_step(model, batch, bf16: bool, fused_adamw: bool):
    return training_step(lambda: hf_loss(model, batch), [hf_adamw(model, fused_adamw)], bf16)


def forward_backward_flops(model, batch) -> float:
    """Model FLOPs of one forward + backward (no optimizer), counted on the HF side."""
    def fwd_bwd():
        hf_loss(model, batch).backward()
        model.zero_grad(set_to_none=True)
    return count_flops(fwd_bwd)


def bench_train(sizes: Sizes, bf16: bool, warmup: int, reps: int, fused_adamw: bool = False) -> Row:
    ours, theirs = build_pair(sizes)
    ours.train()
    theirs.train()
    objective, batch = make_batch(ours.cfg, sizes)
    flops = forward_backward_flops(theirs, batch)
    a = ours_step(ours, objective, batch, bf16)
    b = hf_step(theirs, batch, bf16, fused_adamw)
    first_ours, first_hf = a(), b()  # the same weights and batch: the same first loss
    t_ours, t_hf = interleave(a, b, max(0, warmup - 1), reps)
    dtype = "bf16" if bf16 else "fp32"
    adamw = "HF: fused AdamW" if fused_adamw else "HF: AdamW defaults (for-loop)"
    note = f"first loss {first_ours:.4f} vs {first_hf:.4f}; {adamw}"
    tokens = sizes.batch * sizes.tgt
    row = Row(f"T5-small train {dtype} {sizes.batch}x{sizes.src}->{sizes.tgt}", "tgt tok/s", tokens, t_ours, t_hf,
              dtype, flops=flops, note=note)
    del a, b, ours, theirs
    free_memory()
    return row


def workloads(sizes: Sizes, warmup: int, reps: int, hf_fused_adamw: bool) -> dict:
    return {
        "t5-train-fp32": lambda: bench_train(sizes, False, warmup, reps, hf_fused_adamw),
        "t5-train-bf16": lambda: bench_train(sizes, True, warmup, reps, hf_fused_adamw),
    }
