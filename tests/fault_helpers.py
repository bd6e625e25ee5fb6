"""Helpers for tests/faults (not a test module). Fault injection: the same tests run small in `make test` and at full size in `make faults`.

`trials(quick, full)` sizes a case; `TFAMILY_FAULTS=full` (set by `make faults`) picks the
full size. `record(case, trials, outcome)` appends one row to runs/faults/results.jsonl, from
which docs/reliability.md's table is written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FULL = os.environ.get("TFAMILY_FAULTS") == "full"
RESULTS = Path(__file__).resolve().parents[1] / "runs" / "faults" / "results.jsonl"


def trials(quick: int, full: int) -> int:
    return full if FULL else quick


def record(case: str, n_trials: int, outcome: str) -> None:
    """One row of the reliability table (appended; xdist workers write whole lines)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    row = {"case": case, "trials": n_trials, "outcome": outcome, "full": FULL,
           "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
