"""Turn the texts of a labelled TSV (label<TAB>text) into BERT pretraining text: each text a
document, one sentence a line, a blank line between documents. Labels are dropped, so
pretraining on the training split sees no label and no validation or test text.

    python scripts/tsv_to_pretraining_text.py data/sentiment/zh/train.tsv data/sentiment/zh/pretrain.txt [--force]

An existing output is replaced only with --force.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tfamily.data.labelled import read_labelled_tsv  # noqa: E402
from tfamily.files import OverwriteError, atomic_write_text, refuse_overwrite  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])|(?<=\.)\s+")  # after Chinese / Latin sentence ends


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def main(src: str, dst: str, force: bool = False) -> int:
    try:
        refuse_overwrite(dst, force)
    except OverwriteError as e:
        sys.exit(f"tsv_to_pretraining_text: error: {e}")
    data = read_labelled_tsv(src)
    atomic_write_text(dst, "".join("\n".join(sentences(text)) + "\n\n" for text in data.texts))
    print(f"{len(data):,} documents from {src} -> {dst}")
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--force"]
    if len(args) != 2:
        sys.exit(__doc__)
    sys.exit(main(args[0], args[1], force="--force" in sys.argv[1:]))
