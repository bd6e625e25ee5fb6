"""Writing files without losing what is already there.

Two rules hold for every file tfamily writes (checkpoints have their own folder-level version
of the first, in ``checkpoint.py``):

- **Atomic.** A file is written to a temporary sibling, flushed to the disk, then renamed over
  its name. A reader sees the old file or the new one, never half of one; a process killed
  mid-write or a full disk leaves the old file as it was.
- **No silent overwrite.** A command that would replace a user's checkpoint, export, output
  or data asks ``refuse_overwrite`` first, which fails with a clear error unless ``--force``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO


def cache_root() -> Path:
    """tfamily's own cache folder: ``$TFAMILY_CACHE``, by default ``~/.cache/tfamily``. What lives
    there can be made again (joined model files, built kernels, a benchmark's llama.cpp build)."""
    return Path(os.environ.get("TFAMILY_CACHE") or Path.home() / ".cache" / "tfamily")


class OverwriteError(ValueError):
    """The target exists and --force was not given (the CLI turns this into exit code 2)."""


def refuse_overwrite(path: str | os.PathLike, force: bool, what: str = "") -> None:
    """Raise OverwriteError when ``path`` is a file or a non-empty folder, unless ``force``."""
    path = Path(path)
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not force:
        kind = "folder" if path.is_dir() else "file"
        raise OverwriteError(f"{path} already exists{f' ({what})' if what else ''}; nothing was written. "
                             f"Pass --force to replace the {kind}, or choose another path")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder to the disk (a folder: the names in it, after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` to fill a temporary file beside ``path``, then rename it over
    ``path`` (for writers that want a file name: safetensors, matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[TextIO]:
    """``with atomic_open(path) as f:`` writes UTF-8 text (\\n line ends) to a temporary file
    that replaces ``path`` when the block ends, and is removed if the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)
