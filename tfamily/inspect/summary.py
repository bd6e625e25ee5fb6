"""Where a model's parameters, FLOPs and memory go: counts, formulas and a text report.

Parameter counts are exact. FLOPs and memory are estimates from published formulas
(cited where they are used); each result says so.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..config import ModelConfig
from ..models.family import family_of
from ..nn import MLP, Attention, LearnedPositions, RMSNorm

GROUPS = ("embeddings", "attention", "recurrent", "feed_forward", "norms", "head", "other")

# Module type -> group. A parameter belongs to the group of its nearest classified ancestor.
_GROUP_OF_TYPE: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nn.Embedding, LearnedPositions), "embeddings"),
    ((Attention,), "attention"),
    ((nn.RNNBase,), "recurrent"),  # LSTM / GRU layers
    ((MLP,), "feed_forward"),
    ((nn.LayerNorm, RMSNorm, nn.RMSNorm), "norms"),
)


# ---- parameters ------------------------------------------------------------------------

def param_breakdown(model: nn.Module) -> dict:
    """Parameter counts by group; ``total`` equals ``sum(p.numel() for p in model.parameters())``.

    Inside the backbone a parameter is classified by the type of the module holding it
    (Embedding / LearnedPositions, Attention, MLP, LayerNorm / RMSNorm; anything else is
    ``other``). Everything outside the backbone is the ``head``. The backbone is counted
    first and a parameter only once, so a head tied to the token embedding adds 0.

    ``non_embedding`` excludes the vocabulary and position tables and the head, like the N
    of Kaplan et al. 2020 (§2.1); ``ffn_share`` is feed_forward / non_embedding.
    """
    counts = dict.fromkeys(GROUPS, 0)
    seen: set[int] = set()
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        _count_by_type(backbone, "other", counts, seen)
        for p in model.parameters():  # whatever is left lives outside the backbone: the head
            _add(p, "head", counts, seen)
    else:
        _count_by_type(model, "other", counts, seen)
    total = sum(counts.values())
    non_embedding = total - counts["embeddings"] - counts["head"]
    return {**counts, "total": total, "non_embedding": non_embedding,
            "ffn_share": counts["feed_forward"] / non_embedding if non_embedding else 0.0}


def _group_of(module: nn.Module, inherited: str) -> str:
    for types, group in _GROUP_OF_TYPE:
        if isinstance(module, types):
            return group
    return inherited


def _count_by_type(module: nn.Module, inherited: str, counts: dict, seen: set[int]) -> None:
    group = _group_of(module, inherited)
    for p in module.parameters(recurse=False):
        _add(p, group, counts, seen)
    for child in module.children():
        _count_by_type(child, group, counts, seen)


def _add(p: nn.Parameter, group: str, counts: dict, seen: set[int]) -> None:
    if id(p) not in seen:  # tied parameters are one object: count it the first time only
        seen.add(id(p))
        counts[group] += p.numel()


# ---- FLOPs -----------------------------------------------------------------------------

def matmul_params(cfg: ModelConfig) -> int:
    """Weights that multiply activations in the decoder blocks (no biases, norms or tables);
    for a recurrent model, its layers' input and recurrent matrices (4 gates for an LSTM, 3 for a GRU)."""
    if family_of(cfg).mixing == "recurrence":
        return cfg.n_layer * (4 if cfg.cell == "lstm" else 3) * 2 * cfg.d_model * cfg.d_model
    d, kv_dim = cfg.d_model, cfg.n_kv_head * cfg.head_dim
    attn = d * (d + 2 * kv_dim) + d * d  # fused q|k|v, then the output projection
    ffn = (3 if cfg.gated_mlp else 2) * d * cfg.d_ff  # fc_in (+ fc_gate) and fc_out
    return cfg.n_layer * (attn + ffn)


def flops_per_token(cfg: ModelConfig, seq_len: int, causal_halving: bool = False) -> dict:
    """Forward and training FLOPs per token of a decoder-only model at context ``seq_len``.

    Convention of Kaplan et al. 2020 (Table 1) with the attention term of PaLM (Chowdhery
    et al. 2022, Appendix B): a multiply-add is 2 FLOPs, so

        dense     = 2 * (block matmul weights)           Q, K, V, O and the FFN
        lm_head   = 2 * d_model * vocab_size             the un-embedding, tied or not
        attention = 2 * 2 * n_layer * seq_len * d_model  Q K^T scores and the weighted sum of V
        forward   = dense + lm_head + attention
        training  = 3 * forward                          backward costs twice the forward

    Embedding lookups, norms, biases, activations and softmax are left out (each is
    O(d_model) per token, well under 1 %). Like PaLM, every token is charged for the full
    ``seq_len`` of keys; ``causal_halving=True`` charges the average seq_len / 2 that a
    causal mask actually computes (kernels that skip masked blocks get close to it).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    dense = 2 * matmul_params(cfg)
    lm_head = 2 * cfg.d_model * cfg.vocab_size
    attention = 2 * 2 * cfg.n_layer * seq_len * cfg.n_head * cfg.head_dim
    if family_of(cfg).mixing != "attention":  # a recurrence costs the same per token at any length
        attention = 0
    if causal_halving:
        attention //= 2
    forward = dense + lm_head + attention
    return {"seq_len": seq_len, "dense": dense, "lm_head": lm_head, "attention": attention,
            "forward": forward, "training": 3 * forward,
            "convention": "Kaplan et al. 2020 / PaLM App. B: 2 FLOPs per multiply-add, training = 3 x forward, "
                          + ("causal attention halved" if causal_halving else "attention over the full seq_len")}


# ---- memory ----------------------------------------------------------------------------

Dtype = Literal["fp32", "bf16", "bf16-autocast"]
# dtype -> (bytes per stored weight / gradient, bytes per saved activation element)
_DTYPE_BYTES = {"fp32": (4, 4), "bf16": (2, 2), "bf16-autocast": (4, 2)}
# optimizer -> fp32 state bytes per parameter (AdamW: first and second moment)
_OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam": 8, "sgd": 0, "sgd-momentum": 4}


def memory_estimate(model: nn.Module, batch: int, seq_len: int, dtype: Dtype = "fp32",
                    optimizer: str = "adamw", fused_attention: bool = False) -> dict:
    """Training memory in bytes, one optimizer step: an estimate, not a measurement.

    ``dtype``: "fp32" (everything fp32), "bf16" (weights, gradients and activations in bf16),
    "bf16-autocast" (fp32 weights and gradients, bf16 activations: torch.autocast).
    Optimizer state is fp32 whatever the dtype. Activations follow Korthikanti et al. 2022,
    "Reducing Activation Recomputation in Large Transformer Models", §4.1, see
    ``activation_bytes_per_layer``. Logits are counted as B*T*V*4 bytes (the loss runs in
    fp32). Not counted: the CUDA context, allocator fragmentation, temporary buffers.
    """
    if batch <= 0 or seq_len <= 0:
        raise ValueError(f"batch and seq_len must be positive, got {batch} and {seq_len}")
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPE_BYTES)}; got {dtype!r}")
    if optimizer not in _OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer must be one of {', '.join(_OPTIMIZER_STATE_BYTES)}; got {optimizer!r}")
    cfg: ModelConfig = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes, act_bytes = _DTYPE_BYTES[dtype]
    out = {
        "weights": n_params * weight_bytes,
        "gradients": n_params * weight_bytes,
        "optimizer_state": n_params * _OPTIMIZER_STATE_BYTES[optimizer],
        "activations": cfg.n_layer * activation_bytes_per_layer(cfg, batch, seq_len, act_bytes, fused_attention)
                       + 2 * batch * seq_len * cfg.d_model * act_bytes,  # embedding output, final norm input
        "logits": batch * seq_len * cfg.vocab_size * 4,
    }
    out["total"] = sum(out.values())
    out["note"] = (f"estimate: {dtype} weights/activations, {optimizer} state in fp32, activations per "
                   "Korthikanti et al. 2022 without recomputation")
    return out


def activation_bytes_per_layer(cfg: ModelConfig, batch: int, seq_len: int, elem: int,
                               fused_attention: bool = False) -> int:
    """Bytes one block saves for the backward pass (Korthikanti et al. 2022, §4.1).

    With s = seq_len, b = batch, h = d_model, a = heads, f = d_ff, e = bytes per element,
    the paper's terms (written for e = 2, f = 4h) generalise to:

        attention  e*(3*sbh + 2*sb*h_kv)   block input, Q, output-projection input; K and V
                   + 2*e*a*s^2*b           softmax output and its dropout output
        mlp        e*(sbh + 2*sbf)         fc_in input, activation input, fc_out input
                                           (gated: e*(sbh + 3*sbf), the gate output too)
        norms      2*e*sbh                 the two LayerNorm inputs
        dropout    2*sbh + a*s^2*b         1-byte masks, only when dropout > 0

    where h_kv = n_kv_head * head_dim. A recurrent layer (LSTM / GRU) keeps its input, each
    gate's activation and, for an LSTM, the cell state: e*sbh*(1 + gates (+ 1)).

    For e = 2, f = 4h, h_kv = h this is the paper's  sbh * (34 + 5*a*s/h). Without dropout
    the softmax output is kept once, not twice. ``fused_attention`` (flash or memory-
    efficient SDPA kernels) drops the s^2 terms: those kernels keep only a row statistic.
    """
    s, b, h, f, a = seq_len, batch, cfg.d_model, cfg.d_ff, cfg.n_head
    sbh = s * b * h
    if family_of(cfg).mixing == "recurrence":  # a layer keeps its input, every gate's output, and c
        gates = 4 if cfg.cell == "lstm" else 3
        return elem * sbh * (1 + gates + (1 if cfg.cell == "lstm" else 0)) + (sbh if cfg.dropout > 0 else 0)
    kv = sbh * cfg.n_kv_head // cfg.n_head  # grouped-query models keep smaller K and V
    has_dropout = cfg.dropout > 0
    attention = elem * (3 * sbh + 2 * kv)  # block input, Q, K, V, input of the output projection
    mlp = elem * (sbh + (3 if cfg.gated_mlp else 2) * s * b * f)
    norms = 2 * elem * sbh
    masks = 2 * sbh if has_dropout else 0  # attention-output and MLP-output dropout masks, 1 byte each
    if fused_attention:
        scores = 4 * a * s * b  # fp32 log-sum-exp per query row
    else:
        probs = a * s * s * b
        scores = elem * probs * (2 if has_dropout else 1) + (probs if has_dropout else 0)
    return attention + mlp + norms + masks + scores


# ---- report ----------------------------------------------------------------------------

def format_report(model: nn.Module, seq_len: int | None = None, batch: int = 1, dtype: Dtype = "fp32",
                  optimizer: str = "adamw") -> str:
    """A readable table of parameters, FLOPs per token and training memory."""
    cfg: ModelConfig = model.cfg
    seq_len = seq_len or cfg.max_seq_len
    params = param_breakdown(model)
    flops = flops_per_token(cfg, seq_len)
    mem = memory_estimate(model, batch, seq_len, dtype, optimizer)
    lines = [f"Parameters (exact)            {'count':>10}  {'share':>6}"]
    for group in GROUPS:
        lines.append(f"  {group:<27} {human_count(params[group]):>10}  {_pct(params[group], params['total']):>6}")
    lines += [f"  {'total':<27} {human_count(params['total']):>10}",
              f"  {'non-embedding':<27} {human_count(params['non_embedding']):>10}"
              f"  (FFN share {params['ffn_share']:.1%})",
              "",
              f"FLOPs per token at seq_len={seq_len} (estimate)",
              f"  ({flops['convention']})"]
    for key in ("dense", "lm_head", "attention", "forward", "training"):
        lines.append(f"  {key:<27} {human_flops(flops[key]):>14}")
    lines += ["", f"Training memory, batch={batch}, seq_len={seq_len} (estimate)", f"  ({mem['note']})"]
    for key in ("weights", "gradients", "optimizer_state", "activations", "logits", "total"):
        lines.append(f"  {key:<27} {human_bytes(mem[key]):>10}")
    return "\n".join(lines)


def human_count(n: float) -> str:
    """124439808 -> '124.4M'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    """Binary units: 1288490189 -> '1.2 GiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_flops(n: float) -> str:
    """Decimal units: 2.9e8 -> '290.0 MFLOPs'."""
    for unit, size in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("KFLOPs", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} FLOPs"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"
