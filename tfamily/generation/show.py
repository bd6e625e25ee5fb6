"""Terminal views of a generation: text shaded by probability, and a per-token table."""

from __future__ import annotations

import math
import unicodedata

from .decode import Step

# 256-colour backgrounds from red (unlikely) through yellow to green (likely)
_SHADES = [52, 88, 124, 130, 136, 142, 100, 64, 28, 22]


def shade(steps: list[Step], tokenizer, color: bool) -> str:
    """The generated text; on a colour terminal each token's background shows its probability."""
    if not color:
        return tokenizer.decode([s.token for s in steps])
    parts = []
    for s in steps:
        bg = _SHADES[min(int(s.prob * len(_SHADES)), len(_SHADES) - 1)]
        parts.append(f"\x1b[48;5;{bg}m{tokenizer.token_text(s.token)}\x1b[0m")
    return "".join(parts)


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: Chinese, Japanese and Korean characters (East Asian
    wide / fullwidth) take two, so padding by ``len`` would push the next column right."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _show(text: str, width: int = 14) -> str:
    """A token as a visible cell exactly ``width`` columns wide: quotes, escapes for newlines
    and tabs, cut with "…" when longer, padded by terminal columns (see ``cells``)."""
    shown = repr(text)
    if cells(shown) > width:
        while cells(shown) > width - 1:
            shown = shown[:-1]
        shown += "…"
    return shown + " " * (width - cells(shown))


def format_steps(steps: list[Step], tokenizer, bar_width: int = 10) -> str:
    """One line per generated token: its probability (with a bar) and the top alternatives."""
    lines = [f"{'#':>4}  {'token':14s} {'prob':>6s}  {'':{bar_width}s}  top alternatives"]
    for s in steps:
        bar = "█" * round(s.prob * bar_width)
        alts = "  ".join(f"{_show(tokenizer.token_text(t), 12)} {p:.2f}" for t, p in s.alternatives)
        lines.append(f"{s.index:>4}  {_show(tokenizer.token_text(s.token))} {s.prob:6.3f}  {bar:{bar_width}s}  {alts}")
    if steps:
        mean_logp = sum(math.log(max(s.prob, 1e-12)) for s in steps) / len(steps)
        lines.append(f"mean log-probability {mean_logp:.3f} nats/token over {len(steps)} tokens")
    return "\n".join(lines)
