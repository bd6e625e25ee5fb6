"""Metrics for fine-tuned encoders: classification, named entities and extractive QA.

* `classification_scores`: accuracy, per-class precision / recall / F1, their macro
  average, and for two classes the F1 of the positive class (how GLUE's MRPC and QQP
  report it).
* `entity_f1`: entity-level precision / recall / F1 with `seqeval` (the CoNLL-2003
  metric): an entity counts only when its type and both of its ends are right, so
  tagging three of four tokens of a name earns nothing.
* `qa_scores`: exact match and token-overlap F1 after SQuAD's answer normalisation
  (lower case, no punctuation, no articles a / an / the, single spaces), the best over
  the gold answers of each question, as the official SQuAD v1.1 script computes them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable, Sequence


# ---------------------------------------------------------------------- classification
@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  # gold examples of this class


@dataclass
class ClassificationResult:
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[Hashable, ClassScores]
    n: int
    positive_f1: float | None = None  # binary tasks: F1 of the positive class

    def format(self) -> str:
        lines = [f"accuracy {100 * self.accuracy:.2f}  macro-F1 {100 * self.macro_f1:.2f}"
                 + (f"  F1 {100 * self.positive_f1:.2f}" if self.positive_f1 is not None else "")
                 + f"  ({self.n} examples)"]
        for label, s in self.per_class.items():
            lines.append(f"  {label!s:>12}  P {100 * s.precision:6.2f}  R {100 * s.recall:6.2f}  "
                         f"F1 {100 * s.f1:6.2f}  n={s.support}")
        return "\n".join(lines)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; 0 where undefined (no predictions or no gold of a class)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def classification_scores(predictions: Sequence[Hashable], labels: Sequence[Hashable],
                          positive: Hashable | None = None) -> ClassificationResult:
    """Scores of predicted against gold labels (any hashable labels, e.g. ints or strings).

    Classes are those seen in either list. Macro averages weight every class alike,
    which matters when classes are unbalanced (57.8 % "fresh" reviews). ``positive``
    names the positive class of a binary task (default: 1 when the labels are 0/1)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no examples to score")
    classes = sorted(set(labels) | set(predictions), key=lambda c: (str(type(c)), c))
    per_class = {}
    for c in classes:
        tp = sum(p == c and g == c for p, g in zip(predictions, labels))
        fp = sum(p == c and g != c for p, g in zip(predictions, labels))
        fn = sum(p != c and g == c for p, g in zip(predictions, labels))
        per_class[c] = ClassScores(*_prf(tp, fp, fn), support=tp + fn)
    k = len(classes)
    accuracy = sum(p == g for p, g in zip(predictions, labels)) / len(labels)
    if positive is None and set(classes) <= {0, 1}:
        positive = 1
    positive_f1 = per_class[positive].f1 if positive in per_class else (0.0 if positive is not None else None)
    return ClassificationResult(
        accuracy=accuracy,
        macro_precision=sum(s.precision for s in per_class.values()) / k,
        macro_recall=sum(s.recall for s in per_class.values()) / k,
        macro_f1=sum(s.f1 for s in per_class.values()) / k,
        per_class=per_class,
        n=len(labels),
        positive_f1=positive_f1,
    )


# ---------------------------------------------------------------------- entities
@dataclass
class EntityResult:
    precision: float
    recall: float
    f1: float
    per_type: dict[str, ClassScores] = field(default_factory=dict)
    sentences: int = 0

    def format(self) -> str:
        lines = [f"entity P {100 * self.precision:.2f}  R {100 * self.recall:.2f}  F1 {100 * self.f1:.2f}  "
                 f"({self.sentences} sentences)"]
        lines += [f"  {t:>8}  P {100 * s.precision:6.2f}  R {100 * s.recall:6.2f}  F1 {100 * s.f1:6.2f}  n={s.support}"
                  for t, s in self.per_type.items()]
        return "\n".join(lines)


def entity_f1(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]],
              scheme: str | None = None) -> EntityResult:
    """Entity-level scores of predicted against gold tag sequences (BIO / IOB2 tags such as
    "B-PER", "I-PER", "O"), one list per sentence, with seqeval. ``scheme="IOB2"`` (or
    "IOBES", ...) makes seqeval strict: an entity must also start with a B- tag."""
    try:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    except ImportError:
        raise ImportError("entity-level F1 needs seqeval: pip install 'tfamily[eval]'") from None
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predicted sentences but {len(labels)} gold ones")
    for i, (p, g) in enumerate(zip(predictions, labels)):
        if len(p) != len(g):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(g)} gold tags")
    pred, gold = [list(p) for p in predictions], [list(g) for g in labels]
    kwargs = {}
    if scheme is not None:
        from seqeval import scheme as schemes

        if not hasattr(schemes, scheme):
            raise ValueError(f"unknown tagging scheme {scheme!r}; seqeval knows IOB1, IOB2, IOE1, IOE2, IOBES, BILOU")
        kwargs = {"mode": "strict", "scheme": getattr(schemes, scheme)}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    per_type = {t: ClassScores(v["precision"], v["recall"], v["f1-score"], int(v["support"]))
                for t, v in report.items() if not t.endswith(" avg")}
    return EntityResult(precision_score(gold, pred, zero_division=0, **kwargs),
                        recall_score(gold, pred, zero_division=0, **kwargs),
                        f1_score(gold, pred, zero_division=0, **kwargs), per_type, len(gold))


# ---------------------------------------------------------------------- question answering
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation, drop a / an / the, one space."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of one predicted answer against one gold answer (after normalising)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty (an unanswerable question answered so) counts as right
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass
class QAResult:
    exact_match: float  # share of questions, 0..1
    f1: float  # mean over questions of the best token F1, 0..1
    n: int

    def format(self) -> str:
        return f"exact match {100 * self.exact_match:.2f}  F1 {100 * self.f1:.2f}  ({self.n} questions)"


def qa_scores(predictions: Sequence[str], answers: Sequence[str | Sequence[str]]) -> QAResult:
    """Exact match and F1 of predicted answer strings; each question may have several gold
    answers (a list), and scores the best of them."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} questions")
    if not predictions:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    for i, (pred, gold) in enumerate(zip(predictions, answers)):
        golds = [gold] if isinstance(gold, str) else list(gold)
        if not golds:
            raise ValueError(f"question {i} has no gold answer")
        em += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1 += max(answer_f1(pred, g) for g in golds)
    return QAResult(em / len(predictions), f1 / len(predictions), len(predictions))
