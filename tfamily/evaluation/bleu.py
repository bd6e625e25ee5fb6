"""BLEU and chrF with sacreBLEU (Post 2018): detokenised text in, the standard scores and
their signatures out, so a figure can be compared with published ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class BleuResult:
    bleu: float
    chrf: float
    bleu_signature: str  # e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.x
    chrf_signature: str
    sentences: int
    bleu_detail: str  # sacreBLEU's own line: n-gram precisions, brevity penalty, lengths

    def format(self) -> str:
        return (f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  ({self.sentences} sentences)\n"
                f"  {self.bleu_detail}\n  BLEU signature: {self.bleu_signature}\n  chrF signature: {self.chrf_signature}")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> BleuResult:
    """Corpus BLEU (13a tokenisation, mixed case) and chrF of ``hypotheses`` against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no sentences to score")
    b, c = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    bs, cs = b.corpus_score(list(hypotheses), [list(references)]), c.corpus_score(list(hypotheses), [list(references)])
    return BleuResult(bs.score, cs.score, str(b.get_signature()), str(c.get_signature()), len(hypotheses), str(bs))
