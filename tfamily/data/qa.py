"""Question-answering examples: one JSON object a line (SQuAD's fields, flattened)::

    {"question": "Where does John live?", "context": "John lives in Berlin.",
     "answers": ["Berlin"], "answer_start": 14}

``answers`` may also be one string (``"answer"``); ``answer_start`` (the character offset of
the first answer) is optional: without it the first occurrence in the context is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class QAExample:
    question: str
    context: str
    answers: list[str] = field(default_factory=list)  # gold answer texts (the first is trained on)
    answer_start: int | None = None  # character offset of answers[0] in the context, when known


def read_qa_jsonl(path: str | os.PathLike) -> list[QAExample]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}, line {n}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {n}: expected a JSON object")
        for key in ("question", "context"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}, line {n}: '{key}' must be a string")
        answers = row.get("answers", row.get("answer", []))
        answers = [answers] if isinstance(answers, str) else list(answers)
        if not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}, line {n}: 'answers' must be strings")
        start = row.get("answer_start")
        if answers and start is None and row["context"].find(answers[0]) < 0:
            raise ValueError(f"{path}, line {n}: the answer {answers[0]!r} is not in the context")
        examples.append(QAExample(row["question"], row["context"], answers, start))
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples
