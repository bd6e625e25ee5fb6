"""T5's sentinel tokens ``<extra_id_0>``, ``<extra_id_1>``, ...: each names one blanked-out
span in span corruption. T5's own vocabulary has 100 of them at its top ids; a tokenizer
trained here gets them added as special tokens after training."""

from __future__ import annotations

import re

SENTINEL = "<extra_id_{}>"
_PATTERN = re.compile(r"<extra_id_(\d+)>")


def sentinel_ids(tokenizer) -> list[int]:
    """Ids of <extra_id_0>, <extra_id_1>, ... in that order (as many as are consecutive from 0)."""
    ids = []
    while (i := tokenizer.token_to_id(SENTINEL.format(len(ids)))) is not None:
        ids.append(i)
    return ids


def add_sentinels(tokenizer, n: int = 100):
    """A copy of ``tokenizer`` with ``n`` sentinel tokens added as specials (ids after the
    vocabulary); existing ids do not change."""
    from .tokenizer import Tokenizer
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    backend = Tokenizer.from_str(tokenizer.to_str()).backend
    backend.add_special_tokens([SENTINEL.format(i) for i in range(n)])
    return Tokenizer(backend, tokenizer.kind)
