"""Hand-written CPU kernels, for the few places where torch's own was measured slow.

The C sources sit next to this file (int8_matvec.c, gguf_matmul.c, rms_norm.c, attention.c,
gated.c, and the headers bf16.h and exp16.h, which they include). On first use each is
compiled with the machine's C compiler (``cc``, or ``$CC``) into ``native/`` of tfamily's
cache (``files.cache_root``: ``$TFAMILY_CACHE``, by default ``~/.cache/tfamily``) and called
through ``ctypes`` with plain pointers. Why not ``torch.utils.cpp_extension``: that build
includes torch's C++ headers (a minute or more on two cores, and it needs ninja), where these
files build in a fraction of a second. OpenMP is the runtime torch has already loaded (the
same ``libgomp.so.1`` soname), so the kernels run on torch's own threads, as many as
``torch.get_num_threads()``.

``-march=native`` lets the compiler use every vector instruction of the CPU at hand; the
library's file name carries a hash of the source, the flags, the compiler and the CPU's model
and flags, so a cache shared by machines of different kinds never loads a binary built for
another CPU. Without a compiler, or when a build fails (the compiler's message is logged),
``library`` returns None and the callers keep torch's kernel. ``TFAMILY_NATIVE=0`` turns
these kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from ...files import cache_root

log = logging.getLogger(__name__)

SOURCES = Path(__file__).parent
FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")  # and -march=native (or the ``march`` asked for)
INT8_MAX_ROWS = 1  # from 2 rows on, torch's int8 kernel was as fast or faster (benchmarks/RESULTS.md)
GGUF_MAX_ROWS = 16  # beyond, GGUFLinear dequantises to bf16 for one matmul: faster from 16-64 rows on (RESULTS.md)

# GGUF block formats gguf_matmul.c multiplies from, in its enum's order: kind -> (weights, bytes) a block
GGUF_BLOCKS = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
               "Q4_K": (256, 144), "Q6_K": (256, 210)}


def cache_dir() -> Path:
    return cache_root() / "native"


def _cpu_identity() -> str:
    """The CPU's model name and feature flags (what -march=native compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    return "\n".join(sorted({line for line in text.splitlines() if line.startswith(("model name", "flags"))}))


@functools.lru_cache(maxsize=None)
def library(name: str, march: str = "native") -> ctypes.CDLL | None:
    """The compiled ``name.c`` of this folder, built on first use for ``-march=<march>``; None
    where it cannot be. (Another ``march`` than "native" is for tests of the plain-C paths.)"""
    if os.environ.get("TFAMILY_NATIVE", "1") == "0":
        return None
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        log.info("no C compiler found: tfamily's native kernels are off, torch's are used")
        return None
    source = SOURCES / f"{name}.c"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    flags = (*FLAGS, f"-march={march}")
    headers = [h.read_text() for h in sorted(SOURCES.glob("*.h"))]  # what the sources include
    key = hashlib.sha256("\0".join([source.read_text(), *headers, " ".join(flags), version, _cpu_identity()]).encode())
    path = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        built = subprocess.run([cc, *flags, str(source), "-o", str(partial)], capture_output=True, text=True)
        if built.returncode != 0:
            log.warning("building %s failed, torch's kernel is used instead:\n%s", source.name, built.stderr[-2000:])
            partial.unlink(missing_ok=True)
            return None
        os.replace(partial, path)  # whole or not at all: a concurrent process never loads half a file
    return ctypes.CDLL(str(path))


def function(name: str, symbol: str, argtypes: list, restype=None, march: str = "native"):
    """``symbol`` of the library built from ``name.c``, its C signature declared (ctypes
    converts each argument by it); None where the library cannot be built."""
    lib = library(name, march)
    if lib is None:
        return None
    fn = getattr(lib, symbol)
    fn.argtypes, fn.restype = argtypes, restype
    return fn


@functools.lru_cache(maxsize=None)
def _int8_matvec():
    return function("int8_matvec", "tf_int8_matvec_bf16", [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int])


def int8_available() -> bool:
    return _int8_matvec() is not None


def int8_matvec(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(x W^T) * scale + bias: x (N, in) bf16, w (out, in) int8, scale and bias (out,) bf16,
    all contiguous on the CPU -> (N, out) bf16, summed in fp32. Only where ``int8_available()``."""
    n, width = x.shape
    out = w.shape[0]
    if w.shape[1] != width or scale.shape != (out,) or (bias is not None and bias.shape != (out,)):
        raise ValueError(f"int8_matvec: x {tuple(x.shape)}, w {tuple(w.shape)}, scale {tuple(scale.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)} do not fit together")
    for name, t, dtype in (("x", x, torch.bfloat16), ("w", w, torch.int8), ("scale", scale, torch.bfloat16),
                           ("bias", bias, torch.bfloat16)):
        if t is not None and (t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu"):
            raise ValueError(f"int8_matvec: {name} must be a contiguous {dtype} CPU tensor, got {t.dtype} "
                             f"on {t.device}{'' if t.is_contiguous() else ', not contiguous'}")
    y = torch.empty(n, out, dtype=torch.bfloat16)
    _int8_matvec()(x.data_ptr(), w.data_ptr(), scale.data_ptr(), 0 if bias is None else bias.data_ptr(),
                   y.data_ptr(), n, width, out, torch.get_num_threads())
    return y


@functools.lru_cache(maxsize=None)
def gguf_kernels(march: str = "native") -> ctypes.CDLL | None:
    """gguf_matmul.c's library with its argument types declared, or None."""
    lib = library("gguf_matmul", march)
    if lib is None:
        return None
    lib.tf_gguf_simd.restype = ctypes.c_int
    lib.tf_gguf_matmul_bf16.argtypes = ([ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int])
    lib.tf_gguf_matmul_bf16.restype = ctypes.c_int  # -1: no memory for x's int8 copy
    lib.tf_gguf_dequantize.argtypes = ([ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_int])
    lib.tf_gguf_dequantize.restype = None
    return lib


def gguf_available() -> bool:
    """Whether GGUF blocks can be multiplied here at memory speed: the library builds, with its
    AVX-512 VNNI loop (its plain-C one is correct but far slower than torch's int8 kernel)."""
    lib = gguf_kernels()
    return lib is not None and lib.tf_gguf_simd() == 1


def _check_blocks(blocks: torch.Tensor, kind: str, in_features: int) -> int:
    if kind not in GGUF_BLOCKS:
        raise ValueError(f"GGUF kind {kind!r} has no kernel here; these do: {', '.join(GGUF_BLOCKS)}")
    per_block, nbytes = GGUF_BLOCKS[kind]
    if in_features % per_block:
        raise ValueError(f"{kind} rows are whole blocks of {per_block} weights; {in_features} is not")
    row_bytes = in_features // per_block * nbytes
    if blocks.dtype != torch.uint8 or blocks.dim() != 2 or blocks.shape[1] != row_bytes:
        raise ValueError(f"{kind} blocks of {in_features}-wide rows must be a (rows, {row_bytes}) uint8 tensor, "
                         f"got {tuple(blocks.shape)} {blocks.dtype}")
    if not blocks.is_contiguous() or blocks.device.type != "cpu":
        raise ValueError(f"{kind} blocks must be a contiguous CPU tensor")
    return list(GGUF_BLOCKS).index(kind)


def gguf_matmul(x: torch.Tensor, blocks: torch.Tensor, kind: str, bias: torch.Tensor | None = None,
                march: str = "native") -> torch.Tensor:
    """x W^T + bias with W (rows, in) held as GGUF ``kind`` blocks (rows, bytes a row), as the
    file has them. x (N, in) bf16 contiguous; bias (rows,) bf16 or None -> (N, rows) bf16. x is
    rounded to int8 blocks of 32 on the way (gguf_matmul.c). Every argument checked; then
    ``gguf_matmul_parts``."""
    n, width = x.shape
    code = _check_blocks(blocks, kind, width)
    rows = blocks.shape[0]
    if x.dtype != torch.bfloat16 or not x.is_contiguous() or x.device.type != "cpu":
        raise ValueError(f"gguf_matmul: x must be a contiguous bf16 CPU tensor, got {x.dtype} on {x.device}")
    if bias is not None and (bias.shape != (rows,) or bias.dtype != torch.bfloat16 or not bias.is_contiguous()):
        raise ValueError(f"gguf_matmul: bias must be ({rows},) contiguous bf16, got {tuple(bias.shape)} {bias.dtype}")
    if gguf_kernels(march) is None:
        raise RuntimeError("tfamily's GGUF kernels could not be built here (see the log); check gguf_available()")
    return gguf_matmul_parts(x, [(code, blocks)], bias, rows, march)


def gguf_matmul_parts(x: torch.Tensor, parts: list[tuple[int, torch.Tensor]], bias: torch.Tensor | None,
                      out_features: int, march: str = "native") -> torch.Tensor:
    """``gguf_matmul`` of a layer stacked from ``parts`` (kind's index in GGUF_BLOCKS, blocks),
    with none of its checks: for ``GGUFLinear``, which checked its parts once when it was made
    (at batch 1 a decoding step makes some 130 of these calls, and the checks cost as much as
    the call). x (N, in) contiguous bf16 on the CPU; returns (N, out_features) bf16."""
    n, width = x.shape
    y = torch.empty(n, out_features, dtype=torch.bfloat16)
    call, threads = gguf_kernels(march).tf_gguf_matmul_bf16, torch.get_num_threads()
    xp, yp, bp = x.data_ptr(), y.data_ptr(), 0 if bias is None else bias.data_ptr()
    for code, blocks in parts:  # each part's rows: the next columns of y and entries of bias (2 bytes each)
        rows = blocks.shape[0]
        if call(code, xp, n, width, blocks.data_ptr(), rows, bp, yp, out_features, threads):
            raise MemoryError(f"gguf_matmul: no memory for the int8 copy of x ({n} x {width})")
        yp, bp = yp + 2 * rows, bp and bp + 2 * rows
    return y


def gguf_dequantize(blocks: torch.Tensor, kind: str, in_features: int, dtype: torch.dtype = torch.float32,
                    march: str = "native") -> torch.Tensor:
    """The (rows, in_features) matrix that GGUF ``kind`` blocks (rows, bytes a row) hold, in fp32 or bf16."""
    code = _check_blocks(blocks, kind, in_features)
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"gguf_dequantize writes float32 or bfloat16, not {dtype}")
    lib = gguf_kernels(march)
    if lib is None:
        raise RuntimeError("tfamily's GGUF kernels could not be built here (see the log)")
    w = torch.empty(blocks.shape[0], in_features, dtype=dtype)
    fp32 = dtype == torch.float32
    lib.tf_gguf_dequantize(code, blocks.data_ptr(), blocks.shape[0], in_features, w.data_ptr() if fp32 else None,
                           None if fp32 else w.data_ptr(), torch.get_num_threads())
    return w


@functools.lru_cache(maxsize=None)
def _rms_norm():
    return function("rms_norm", "tf_rms_norm_bf16",
                    [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int])


def rms_norm_available() -> bool:
    return _rms_norm() is not None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * weight over the last dimension in one call, fp32 inside: x (..., d) and
    weight (d,) contiguous bf16 CPU tensors -> bf16 like x (F.rms_norm's result, one call
    instead of some twenty). Only where ``rms_norm_available()``; the caller checks the rest."""
    y = torch.empty_like(x)
    d = x.shape[-1]
    _rms_norm()(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.numel() // d, d, eps, torch.get_num_threads())
    return y


ATTEND_MAX_HEAD_DIM = 256  # attention.c's widest head


@functools.lru_cache(maxsize=None)
def _attend_step(march: str = "native"):
    return function("attention", "tf_attend_step_bf16",
                    [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
                    + [ctypes.c_int64] * 4 + [ctypes.c_float, ctypes.c_int], march=march)


def attend_simd(march: str = "native") -> bool:
    """Whether attention.c was built with its AVX-512 BF16 loop (else its plain-C one)."""
    simd = function("attention", "tf_attend_simd", [], ctypes.c_int, march=march)
    return simd is not None and simd() == 1


@functools.lru_cache(maxsize=None)
def attend_step_available() -> bool:
    """Whether attention.c runs here with its AVX-512 BF16 loop (its plain-C one is correct but
    slower than torch's attention past a few dozen keys)."""
    return _attend_step() is not None and attend_simd()


def attend_step(qkv: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None, k_cache: torch.Tensor,
                v_cache: torch.Tensor, start: int, n_kv_head: int, mask: torch.Tensor | None = None,
                scale: float | None = None, march: str = "native") -> torch.Tensor:
    """Self-attention of one new token a row against a KV cache, in one call (attention.c):
    qkv (B, 1, H + 2 H_kv, D), the token's q, k and v heads, contiguous; rotary (cos, signed
    sin), each (B, 1, 1, D) contiguous (``positions.head_tables``), or None; k_cache, v_cache
    (B, H_kv, max_len, D), one layer's slots (unit stride along D, slots D apart, the same
    strides for both), of which ``start`` are filled: the turned key and the value are written
    into slot ``start`` and keys 0..start attended, except where ``mask`` (B | 1, 1, 1, start + 1)
    bool, unit stride along keys, is False. bf16 CPU tensors, H a multiple of H_kv, D at most
    ATTEND_MAX_HEAD_DIM; scale defaults to 1 / sqrt(D). Returns the heads merged, (B, 1, H * D)
    bf16. The caller (``Attention._native_step``) checks all that."""
    b, _, heads, d = qkv.shape
    h = heads - 2 * n_kv_head
    y = torch.empty(b, 1, h * d, dtype=torch.bfloat16)
    cos, sin = (0, 0) if rotary is None else (rotary[0].data_ptr(), rotary[1].data_ptr())
    valid, row = (0, 0) if mask is None else (mask.data_ptr(), mask.stride(0) if mask.shape[0] > 1 else 0)
    _attend_step(march)(qkv.data_ptr(), cos, sin, k_cache.data_ptr(), v_cache.data_ptr(), k_cache.stride(0),
                        k_cache.stride(1), start, valid, row, y.data_ptr(), b, h, n_kv_head, d,
                        d ** -0.5 if scale is None else scale, torch.get_num_threads())
    return y


@functools.lru_cache(maxsize=None)
def _silu_gate(march: str = "native"):
    return function("gated", "tf_silu_gate_bf16", [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_int],
                    march=march)


@functools.lru_cache(maxsize=None)
def silu_gate_available() -> bool:
    return _silu_gate() is not None


def silu_gate(ag: torch.Tensor, march: str = "native") -> torch.Tensor:
    """silu(a) * g of a fused gate|up projection ag (..., 2F) (a: the first F columns, g: the
    rest), contiguous bf16 on the CPU -> (..., F) bf16, rounded as ``F.silu(a) * g`` rounds
    (gated.c). Only where ``silu_gate_available()``; the caller (``nn.mlp.gate``) checks the rest."""
    f = ag.shape[-1] // 2
    h = torch.empty(*ag.shape[:-1], f, dtype=torch.bfloat16)
    _silu_gate(march)(ag.data_ptr(), h.data_ptr(), ag.numel() // (2 * f), f, torch.get_num_threads())
    return h
