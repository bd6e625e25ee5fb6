"""llama.cpp's ``llama-bench`` on the same GGUF files, for the decode rows' llama.cpp column.

    python -m benchmarks.llama_cpp build          # fetch the sdist, build llama-bench (once)
    python -m benchmarks.llama_cpp run FILE.gguf  # its batch-1 generation speed on FILE

llama.cpp is built from the source that the ``llama-cpp-python`` sdist vendors (its
``vendor/llama.cpp``), at a pinned version, outside any installed package: pip downloads the
sdist (no wheel, no dependencies), it is unpacked under ``$TFAMILY_CACHE/llama.cpp`` (default
``~/.cache/tfamily/llama.cpp``) and ``cmake --build --target llama-bench`` builds the one tool,
for this machine's CPU (``GGML_NATIVE``: AVX-512, AMX where the CPU has them). Nothing here is
needed to build or test tfamily; ``make bench`` skips the llama.cpp rows when the build fails
and says why.

``llama-bench -p 0 -n N`` times the generation of N tokens one at a time after an empty
prompt, from the file's own quantised weights; its JSON gives the mean time of the
repetitions, which becomes seconds per N tokens here, as the decode rows count them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tfamily.files import cache_root

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp is built


def cache_dir() -> Path:
    return cache_root() / "llama.cpp" / LLAMA_CPP_PYTHON


def binary() -> Path:
    return cache_dir() / "build" / "bin" / "llama-bench"


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def source_dir() -> Path:
    """vendor/llama.cpp of the pinned sdist, downloaded and unpacked on first use."""
    root = cache_dir()
    src = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if src.is_dir():
        return src
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        _run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-deps",
              "--no-binary", ":all:", "--no-build-isolation", "-q", "-d", str(root)])
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name or m.name.endswith("/vendor/llama.cpp")]
        tar.extractall(root, members=members, filter="data")
    return src


def build(jobs: int | None = None) -> Path:
    """The llama-bench binary, built once (Release, this CPU's instruction sets)."""
    if binary().is_file():
        return binary()
    src, out = source_dir(), cache_dir() / "build"
    _run(["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
          "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
         stdout=subprocess.DEVNULL)
    _run(["cmake", "--build", str(out), "--target", "llama-bench", "-j", str(jobs or os.cpu_count() or 1)],
         stdout=subprocess.DEVNULL)
    return binary()


def bench(path: str | os.PathLike, new_tokens: int, threads: int, reps: int = 1) -> dict:
    """llama-bench's JSON record for generating ``new_tokens`` at batch 1 from ``path``:
    ``avg_ts`` tokens/s, ``avg_ns`` per run, ``build_commit``, ``build_number``, ``type`` ..."""
    cmd = [str(binary()), "-m", str(path), "-p", "0", "-n", str(new_tokens), "-t", str(threads),
           "-r", str(reps), "-o", "json"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    records = json.loads(done.stdout)
    if len(records) != 1:
        raise RuntimeError(f"llama-bench gave {len(records)} records, expected 1: {done.stdout[:300]}")
    return records[0]


def seconds(path: str | os.PathLike, new_tokens: int, threads: int) -> float:
    """Seconds llama.cpp takes to generate ``new_tokens`` at batch 1 (one llama-bench run)."""
    return bench(path, new_tokens, threads)["avg_ns"] / 1e9


def version() -> str:
    """'llama.cpp build N (commit), from llama-cpp-python X' as llama-bench reports it."""
    done = subprocess.run([str(binary()), "--version"], capture_output=True, text=True)
    line = next((ln for ln in (done.stdout + done.stderr).splitlines() if "version" in ln), "version unknown")
    return f"llama.cpp {line.strip()}, from llama-cpp-python {LLAMA_CPP_PYTHON}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.llama_cpp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download the sdist and build llama-bench")
    b.add_argument("--jobs", type=int, default=None)
    r = sub.add_parser("run", help="batch-1 generation speed on a GGUF file")
    r.add_argument("file")
    r.add_argument("--new-tokens", type=int, default=64)
    r.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    r.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    build(args.jobs if args.cmd == "build" else None)
    print(version())
    if args.cmd == "run":
        rec = bench(args.file, args.new_tokens, args.threads, args.reps)
        print(f"{Path(args.file).name}: {rec['avg_ts']:.1f} ± {rec['stddev_ts']:.1f} tok/s "
              f"(tg{args.new_tokens}, {args.threads} threads, {rec.get('model_type', '?')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
