"""BERT-base inference, tfamily vs Hugging Face ``transformers``, on the same random weights.

HF builds ``BertModel(BertConfig())`` (BERT-base: 12 layers, 768 wide, 110M) with dropout 0
and initialises it from a fixed seed; tfamily loads the very same tensors through
``tfamily.interop.hf_bert`` into the matching model (``FeatureExtractor``: hidden states and
the pooled [CLS], what ``BertModel`` returns). A repetition is one forward pass over a batch
of 32 sequences of 128 tokens under ``torch.inference_mode``.

Each side gets its weights in the dtype the way its users would for inference: HF with
``.to(dtype)``, tfamily with ``nn.quant.convert_weights`` (the dtype, and the linear layers'
weights packed into oneDNN's layout; exact, as the hidden-state difference in the note shows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import BertConfig, BertModel

from tfamily.nn.quant import convert_weights

from .harness import DTYPES, Row, count_flops, interleave, labelled, mirror_of, random_ids


@dataclass
class Sizes:
    batch: int = 32
    seq: int = 128
    model: dict = field(default_factory=dict)  # BertConfig overrides (empty = BERT-base)


FULL = Sizes()
QUICK = Sizes(batch=4, seq=32, model=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                          intermediate_size=256))


def build_pair(sizes: Sizes, seed: int = 0):
    """(tfamily FeatureExtractor, HF BertModel) holding identical random weights."""
    hf_cfg = BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **sizes.model)
    torch.manual_seed(seed)
    theirs = BertModel(hf_cfg).eval()
    return mirror_of(theirs).eval(), theirs


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"max |hidden diff| {(a.float() - b.float()).abs().max().item():.1e}"


def bench_forward(sizes: Sizes, bf16_weights: bool, warmup: int, reps: int) -> Row:
    ours, theirs = build_pair(sizes)
    dtype = "bf16" if bf16_weights else "fp32"
    ours, theirs = convert_weights(ours, dtype), theirs.to(DTYPES[dtype])
    ids = random_ids(theirs.config.vocab_size, sizes.batch, sizes.seq, seed=3)
    mask = torch.ones_like(ids)

    def run_ours():
        with torch.inference_mode():
            return ours(ids, attention_mask=mask).hidden

    def run_theirs():
        with torch.inference_mode():
            return theirs(input_ids=ids, attention_mask=mask).last_hidden_state

    note = largest_difference(labelled("tfamily", run_ours), labelled("HF", run_theirs))  # also a warm-up
    t_ours, t_hf = interleave(run_ours, run_theirs, max(0, warmup - 1), reps)
    row = Row(f"BERT-base fwd {dtype} {sizes.batch}x{sizes.seq}", "seq/s", sizes.batch, t_ours, t_hf, dtype,
              flops=count_flops(run_theirs), note=note)
    return row


def workloads(sizes: Sizes, warmup: int, reps: int) -> dict:
    return {
        "bert-fwd-fp32": lambda: bench_forward(sizes, False, warmup, reps),
        "bert-fwd-bf16": lambda: bench_forward(sizes, True, warmup, reps),
    }
