"""Hand-written CPU kernels, for the few places where torch's own was measured slow.

The C source sits next to this file. On first use it is compiled with the machine's C compiler
(``cc``, or ``$CC``) into ``native/`` of tfamily's cache (``files.cache_root``: ``$TFAMILY_CACHE``,
by default ``~/.cache/tfamily``) and called through ``ctypes`` with plain pointers. Why not ``torch.utils.cpp_extension``: that build includes torch's C++ headers (a
minute or more on two cores, and it needs ninja), where these files build in a fraction of a
second. OpenMP is the runtime torch has already loaded (the same ``libgomp.so.1`` soname), so
the kernels run on torch's own threads, as many as ``torch.get_num_threads()``.

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
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
INT8_MAX_ROWS = 1  # from 2 rows on, torch's int8 kernel was as fast or faster (benchmarks/RESULTS.md)


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
def library(name: str) -> ctypes.CDLL | None:
    """The compiled ``name.c`` of this folder, built on first use; None where it cannot be."""
    if os.environ.get("TFAMILY_NATIVE", "1") == "0":
        return None
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        log.info("no C compiler found: tfamily's native kernels are off, torch's are used")
        return None
    source = SOURCES / f"{name}.c"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source.read_text(), " ".join(FLAGS), version, _cpu_identity()]).encode())
    path = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        built = subprocess.run([cc, *FLAGS, str(source), "-o", str(partial)], capture_output=True, text=True)
        if built.returncode != 0:
            log.warning("building %s failed, torch's kernel is used instead:\n%s", source.name, built.stderr[-2000:])
            partial.unlink(missing_ok=True)
            return None
        os.replace(partial, path)  # whole or not at all: a concurrent process never loads half a file
    return ctypes.CDLL(str(path))


@functools.lru_cache(maxsize=None)
def _int8_matvec():
    lib = library("int8_matvec")
    if lib is None:
        return None
    fn = lib.tf_int8_matvec_bf16
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    fn.restype = None
    return fn


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
