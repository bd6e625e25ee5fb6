"""GPT-2 workloads, tfamily vs Hugging Face ``transformers``, on the same random weights.

Each ``bench_*`` function builds both sides' callables, hands them to
``harness.interleave`` and returns a ``harness.Row``. The model pair is built once per
workload from ``transformers.GPT2Config()`` defaults (GPT-2 small, 124M) with dropout 0;
HF initialises the weights and tfamily loads the very same tensors through
``tfamily.interop.hf_gpt2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tfamily.generation.decode import SamplingParams, decode
from tfamily.inspect.summary import flops_per_token
from tfamily.models.gpt import CausalLM
from tfamily.nn.linear import PackedLinear
from tfamily.nn.quant import convert_weights
from tfamily.objectives import CausalLMObjective
from tfamily.training.config import TrainConfig
from tfamily.training.optim import make_optimizers

from .harness import DTYPES, Row, free_memory, hf_adamw, interleave, labelled, mirror_of, random_ids, training_step

CPU = torch.device("cpu")
LR = 1e-3  # torch.optim.AdamW's default, used on both sides


@dataclass
class Sizes:
    """Workload sizes; ``model`` overrides GPT2Config fields (empty = GPT-2 small)."""
    train_batch: int = 8
    train_seq: int = 256
    prompt: int = 32
    new_tokens: int = 128
    decode_batch: int = 8
    model: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "GPT-2 small (124M)" if not self.model else f"quick model {self.model}"


FULL = Sizes()
QUICK = Sizes(train_batch=2, train_seq=64, prompt=8, new_tokens=16, decode_batch=8,
              model=dict(n_layer=2, n_embd=128, n_head=4))


# ---- the model pair --------------------------------------------------------------------

def build_pair(sizes: Sizes, seed: int = 0) -> tuple[CausalLM, GPT2LMHeadModel]:
    """(tfamily CausalLM, HF GPT2LMHeadModel) holding identical random weights."""
    torch.manual_seed(seed)
    theirs = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **sizes.model))
    return mirror_of(theirs), theirs


# ---- training --------------------------------------------------------------------------

def ours_train_step(model: CausalLM, windows: torch.Tensor, bf16: bool):
    """tfamily's trainer pieces, as ``Trainer.train_step`` uses them (no clipping): the model
    called with ``defer_head=True`` and CausalLMObjective's loss, which applies the LM head
    chunk by chunk inside autocast (bf16 matmuls, fp32 softmax; ``tfamily.nn.loss``); fused
    AdamW from make_optimizers."""
    objective = CausalLMObjective()
    batch = objective.prepare(windows)
    return training_step(lambda: objective.loss(model(**batch.inputs, defer_head=True), batch),
                         make_optimizers(model, TrainConfig(optimizer="adamw", lr=LR), CPU), bf16)


def hf_train_step(model: GPT2LMHeadModel, windows: torch.Tensor, bf16: bool, fused_adamw: bool):
    """What a HF user writes: ``model(input_ids, labels=...)`` (HF shifts the labels inside),
    ``torch.optim.AdamW`` with default settings (``fused_adamw`` = what HF's Trainer picks)."""
    ids = windows[:, :-1]
    return training_step(lambda: model(input_ids=ids, labels=ids).loss, [hf_adamw(model, fused_adamw)], bf16)


def bench_train(sizes: Sizes, bf16: bool, warmup: int, reps: int, fused_adamw: bool = False) -> Row:
    ours, theirs = build_pair(sizes)
    ours.train()
    theirs.train()
    cfg = ours.cfg
    windows = random_ids(cfg.vocab_size, sizes.train_batch, sizes.train_seq + 1)
    a = ours_train_step(ours, windows, bf16)
    b = hf_train_step(theirs, windows, bf16, fused_adamw)
    t_ours, t_hf = interleave(a, b, warmup, reps)
    tokens = sizes.train_batch * sizes.train_seq
    flops = tokens * flops_per_token(cfg, sizes.train_seq)["training"]
    dtype = "bf16" if bf16 else "fp32"
    note = "HF: fused AdamW" if fused_adamw else "HF: AdamW defaults (for-loop)"
    row = Row(f"train {dtype} {sizes.train_batch}x{sizes.train_seq}", "tok/s", tokens, t_ours, t_hf,
              dtype, flops=flops, note=note)
    del a, b, ours, theirs
    free_memory()
    return row


# ---- decoding --------------------------------------------------------------------------

def ours_generate(model: CausalLM, prompts: torch.Tensor, new_tokens: int):
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, top_alternatives=0)
    rows = prompts.tolist()

    def run() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in rows]
        for steps in decode(model, rows, params):
            for s in steps:
                out[s.seq].append(s.token)
        return out
    return run


def hf_generate(model: GPT2LMHeadModel, prompts: torch.Tensor, new_tokens: int):
    mask = torch.ones_like(prompts)
    eos = model.config.eos_token_id

    def run() -> list[list[int]]:
        with torch.inference_mode():
            out = model.generate(input_ids=prompts, attention_mask=mask, do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=eos)
        return out[:, prompts.shape[1]:].tolist()
    return run


def agreement(a: list[list[int]], b: list[list[int]]) -> str:
    """'same' when every sequence matches, else where the first one diverges."""
    if a == b:
        return "same greedy tokens"
    firsts = [next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))
              for sa, sb in zip(a, b)]
    same = sum(sa == sb for sa, sb in zip(a, b))
    return f"tokens differ: {same}/{len(a)} seqs equal, first divergence at token {min(firsts)}"


QUANTISED_BUFFERS = ("weight_int8", "scale", "weight_int4", "scales_and_zeros", "bias")  # nn.quant's layers


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one forward pass streams: every unique parameter (and quantised or
    packed weight, with its scales) except the token and position tables, of which a step reads
    one row per token (a tied table counts once, as the LM head's matrix)."""
    seen, total = set(), 0
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        tensors = [(n, p) for n, p in module.named_parameters(recurse=False)]
        tensors += [(n, b) for n, b in module.named_buffers(recurse=False)
                    if n in QUANTISED_BUFFERS or n.startswith("blocks")]  # GGUFLinear's blocks0, blocks1, ...
        if isinstance(module, PackedLinear):  # its weight is an opaque tensor, neither parameter nor buffer
            tensors.append(("weight", module.weight))
        for name, p in tensors:
            if id(p) in seen or "pos_emb" in f"{prefix}.{name}":
                continue
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def decode_traffic(model: CausalLM, batch: int, prompt: int, new_tokens: int) -> float:
    """Bytes read per generation: the weights once per forward pass (1 prefill + new_tokens - 1
    steps), plus K and V of the average context per step. A lower bound on memory traffic."""
    cfg = model.cfg
    elem = model.backbone.tok_emb.weight.element_size()  # the KV cache's dtype
    kv_per_step = 2 * cfg.n_layer * batch * (prompt + new_tokens // 2) * cfg.n_kv_head * cfg.head_dim * elem
    return new_tokens * (weight_bytes(model) + kv_per_step)


def bench_decode(sizes: Sizes, batch: int, ours_dtype: str, warmup: int, reps: int, hf_dtype: str | None = None,
                 quality: Callable[[str], str] | None = None) -> Row:
    """Greedy decoding; each side's weights in its format (fp32, bf16; tfamily also int8),
    HF's defaulting to tfamily's. ``quality(format)`` describes what tfamily's format costs,
    when it differs from HF's."""
    hf_dtype = hf_dtype or ours_dtype
    ours, theirs = build_pair(sizes)
    ours, theirs = convert_weights(ours.eval(), ours_dtype), theirs.eval().to(DTYPES[hf_dtype])
    prompts = random_ids(ours.cfg.vocab_size, batch, sizes.prompt, seed=2)
    a = ours_generate(ours, prompts, sizes.new_tokens)
    b = hf_generate(theirs, prompts, sizes.new_tokens)
    note = agreement(labelled("tfamily", a), labelled("HF", b))  # doubles as the first warm-up
    if quality is not None:
        note = quality(ours_dtype)
    t_ours, t_hf = interleave(a, b, max(0, warmup - 1), reps)  # the agreement run was one warm-up
    n, p = sizes.new_tokens, sizes.prompt
    flops = batch * (p + n) * flops_per_token(ours.cfg, p + n // 2)["forward"]
    name = ours_dtype if hf_dtype == ours_dtype else f"tf {ours_dtype} vs HF {hf_dtype}"
    row = Row(f"decode {name} b{batch} p{p}+{n}", "new tok/s", batch * n, t_ours, t_hf,
              "bf16" if ours_dtype == "int8" else ours_dtype,
              flops=flops, bytes=decode_traffic(ours, batch, p, n), note=note, theirs_dtype=hf_dtype,
              theirs_bytes=decode_traffic(theirs_view(ours, hf_dtype), batch, p, n))
    free_memory()
    return row


def theirs_view(ours: CausalLM, dtype: str) -> CausalLM:
    """A model of ours' shape in HF's dtype, for its traffic figure (meta tensors: no memory)."""
    with torch.device("meta"):
        return CausalLM(ours.cfg).to(DTYPES[dtype])


# ---- the list run.py walks -------------------------------------------------------------

def workloads(sizes: Sizes, warmup_train: int, warmup_decode: int, reps_train: int, reps_decode: int,
              hf_fused_adamw: bool, quality: Callable[[str], str] | None = None) -> dict:
    """name -> zero-argument callable returning a Row, in the order they run."""
    return {
        "train-fp32": lambda: bench_train(sizes, False, warmup_train, reps_train, hf_fused_adamw),
        "train-bf16": lambda: bench_train(sizes, True, warmup_train, reps_train, hf_fused_adamw),
        "decode-b1-fp32": lambda: bench_decode(sizes, 1, "fp32", warmup_decode, reps_decode),
        "decode-b1-bf16": lambda: bench_decode(sizes, 1, "bf16", warmup_decode, reps_decode),
        "decode-b1-fast": lambda: bench_decode(sizes, 1, "bf16", warmup_decode, reps_decode, "fp32", quality),
        "decode-b1-int8": lambda: bench_decode(sizes, 1, "int8", warmup_decode, reps_decode, "fp32", quality),
        "decode-b8-fp32": lambda: bench_decode(sizes, sizes.decode_batch, "fp32", warmup_decode, reps_decode),
        "decode-b8-fast": lambda: bench_decode(sizes, sizes.decode_batch, "bf16", warmup_decode, reps_decode,
                                               "fp32", quality),
    }
