"""Stream a UTF-8 text file in bounded chunks cut where tokenization cannot notice.

Training a tokenizer on a file and turning a corpus into token shards both read text
that may not fit in memory, so they read it in chunks of about a megabyte and encode
each chunk on its own. A cut in the wrong place would change the tokens: a word or a
run of spaces split in two becomes two tokens. So chunks end only at a *safe cut*: right
after a newline with a non-whitespace character on both sides ("...word\nWord..."). At
such a point every tokenizer we build sees the lone "\n" as a piece of its own, whether
or not the text stops after it:

* char: every character is a token anyway;
* word: the whitespace run is exactly "\n" either way;
* byte-level BPE: GPT-2's pre-tokenizer regex takes the "\n" alone either way and never
  joins it to the next character (``' ?\\p{L}+'`` takes at most a leading *space*).
  A newline after other whitespace would NOT be safe: ``\\s+(?!\\S)`` splits "\n\nA"
  into "\n", "\n", "A", but a chunk that ends in "\n\n" into one "\n\n".

Hence encoding chunk by chunk gives exactly the ids of encoding the whole text. A file
with no safe cut for a long stretch (say, megabytes of Chinese without a line break) is
cut at a character boundary instead; only the one token at that seam may then differ.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read about 1 MB of text at a time
MAX_PENDING_CHUNKS = 8  # give up looking for a safe cut after this many chunks


def _is_continuation(byte: int) -> bool:
    """UTF-8 continuation bytes look like 0b10xxxxxx."""
    return byte & 0xC0 == 0x80


def _non_space(char_bytes: bytes) -> bool:
    """Whether one encoded character is visible: printable ASCII or non-space Unicode."""
    if len(char_bytes) == 1:
        return 0x21 <= char_bytes[0] <= 0x7E  # ASCII controls count as space-like
    try:
        return not char_bytes.decode("utf-8").isspace()
    except UnicodeDecodeError:
        return False  # no cut here; the strict decode later reports the bad bytes


def _starts_non_space(data: bytes, pos: int) -> bool | None:
    """Whether the character starting at ``data[pos]`` is not whitespace (None: incomplete)."""
    lead = data[pos]
    length = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    if pos + length > len(data):
        return None
    return _non_space(data[pos : pos + length])


def _ends_non_space(data: bytes, pos: int) -> bool:
    """Whether the character ending just before ``data[pos]`` is not whitespace."""
    start = pos - 1
    while start > 0 and pos - start < 4 and _is_continuation(data[start]):
        start -= 1
    return start >= 0 and _non_space(data[start:pos])


def _is_safe_newline(data: bytes, nl: int) -> bool | None:
    """Whether cutting after the newline at ``data[nl]`` is safe (None: need more bytes)."""
    if nl + 1 >= len(data):
        return None
    after = _starts_non_space(data, nl + 1)
    if not after:
        return after
    return _ends_non_space(data, nl)


def last_safe_cut(data: bytes, limit: int | None = None) -> int | None:
    """The largest safe cut p in ``data`` with p < len(data) and p <= ``limit``."""
    end = len(data) if limit is None else min(limit, len(data))
    while True:
        nl = data.rfind(b"\n", 0, end)
        if nl < 0:
            return None
        if _is_safe_newline(data, nl):
            return nl + 1
        end = nl


def find_safe_cut(path: str | os.PathLike, offset: int, chunk_bytes: int = CHUNK_BYTES) -> int | None:
    """The first safe cut at or after byte ``offset`` in the file, or None if there is none."""
    overlap = 8  # re-read a few bytes so characters around a read boundary are seen whole
    base = max(offset - overlap, 0)  # file offset of data[0]
    with open(path, "rb") as f:
        f.seek(base)
        data = f.read(chunk_bytes + overlap)
        while data:
            nl = data.find(b"\n", max(offset - 1 - base, 0))  # cut = nl + 1 must be >= offset
            while nl >= 0:
                verdict = _is_safe_newline(data, nl)
                if verdict is None:
                    break  # the character after it is cut off: read on
                if verdict:
                    return base + nl + 1
                nl = data.find(b"\n", nl + 1)
            more = f.read(chunk_bytes)
            if not more:
                return None
            base += len(data) - overlap
            data = data[-overlap:] + more
    return None


def char_boundary_at_or_before(data: bytes, pos: int) -> int:
    """Move ``pos`` back until it does not split a UTF-8 multi-byte character."""
    while 0 < pos < len(data) and _is_continuation(data[pos]):
        pos -= 1
    return pos


def decode_utf8(data: bytes, path: str | os.PathLike, offset: int) -> str:
    """Strict UTF-8 decode; on failure name the file and the absolute byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.end].hex(" ")
        raise ValueError(
            f"{os.fspath(path)} is not valid UTF-8: bytes {bad} at byte offset {offset + e.start} "
            f"({e.reason}); convert it to UTF-8 first"
        ) from None


def iter_text_chunks(
    path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tuple[int, str]]:
    """Yield ``(byte_offset, text)`` chunks covering bytes [start, end) of a UTF-8 file.

    Each chunk but the last ends at a safe cut (see the module docstring), so the chunks
    joined are the text and encoding them one by one equals encoding the whole. Memory
    stays around ``chunk_bytes`` (at most ``MAX_PENDING_CHUNKS`` times that when no safe
    cut turns up). ``start`` and ``end`` must themselves be cuts the caller chose.
    """
    path = Path(path)
    size = path.stat().st_size
    end = size if end is None else min(end, size)
    with open(path, "rb") as f:
        f.seek(start)
        pos = start  # file offset just past what has been read
        pending = b""
        pending_start = start  # file offset of pending[0]
        while pos < end:
            block = f.read(min(chunk_bytes, end - pos))
            if not block:
                break
            pos += len(block)
            pending += block
            if pos >= end:
                break
            cut = last_safe_cut(pending)
            if cut is None:
                if len(pending) < MAX_PENDING_CHUNKS * chunk_bytes:
                    continue  # keep reading: a safe cut is probably near
                cut = char_boundary_at_or_before(pending, len(pending) - 1)
                if cut == 0:
                    continue
            yield pending_start, decode_utf8(pending[:cut], path, pending_start)
            pending = pending[cut:]
            pending_start += cut
        if pending:
            yield pending_start, decode_utf8(pending, path, pending_start)
