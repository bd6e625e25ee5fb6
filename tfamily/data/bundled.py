"""Corpora shipped inside the package, so a first run needs no download.

Each is a UTF-8 text file under ``tfamily/data/corpora/``; its README says where it
came from, under which licence, and how to rebuild it.
"""

from __future__ import annotations

from pathlib import Path

CORPORA_DIR = Path(__file__).resolve().parent / "corpora"


def available_corpora() -> list[str]:
    """Names of the bundled corpora (file names without ``.txt``)."""
    return sorted(p.stem for p in CORPORA_DIR.glob("*.txt"))


def bundled_corpus(name: str = "shakespeare") -> Path:
    """Path of the bundled corpus ``name`` (e.g. "shakespeare", ~1.1 MB of plays)."""
    path = CORPORA_DIR / f"{name}.txt"
    if "/" in name or "\\" in name or not path.is_file():
        names = ", ".join(available_corpora()) or "none (the package data is missing)"
        raise ValueError(f"no bundled corpus named {name!r}; available: {names}")
    return path
