"""Stop strings: the one matcher, and the text stream the server releases through it.

``StopStrings`` says where the first stop string begins in a text, whether a text ends with
what may become one, and cuts a text there. It serves the three places that stop on text:
``decode``'s ``should_stop`` (``checker``, asked after every token), the final text of
``generate`` and chat (``cut``), and the server's ``TextStream``, which releases a request's
text as it grows while holding back anything that may still turn into a stop string.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .step import Step


class StopStrings:
    """A set of non-empty stop strings."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(stop)
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        self.longest = max((len(s) for s in self.stop), default=0)

    def __bool__(self) -> bool:
        return bool(self.stop)

    def find(self, text: str, start: int = 0) -> int | None:
        """Where the earliest stop string in ``text`` begins (searching from ``start``), or None."""
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def cut(self, text: str) -> str:
        """``text`` up to its first stop string."""
        at = self.find(text)
        return text if at is None else text[:at]

    def may_begin(self, tail: str) -> bool:
        """Whether ``tail`` ends with the beginning of a stop string (more text may complete it)."""
        return any(tail.endswith(s[:k]) for s in self.stop for k in range(1, len(s)))

    def checker(self, tokenizer) -> Callable[[int, list[int]], bool] | None:
        """``should_stop(seq, ids)`` for ``decode``: True once the decoded continuation holds a
        stop string. A stop string that completes at this step lies within the last 4 * len
        tokens (every token carries at least one byte, a character at most four), so only that
        tail is decoded: the check stays constant-time per step however long the generation runs."""
        if not self.stop:
            return None
        tail = 4 * self.longest
        return lambda seq, ids: self.find(tokenizer.decode(ids[-tail:])) is not None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    return StopStrings(stop).cut(text)


class TextStream:
    """Turns one request's Steps into text deltas, honouring stop tokens and stop strings.

    Text that might be the beginning of a stop string (or an incomplete UTF-8 character,
    shown as U+FFFD) is held back until it is known not to be; Steps are released together
    with their text, so a client that draws tokens sees exactly the text it was sent."""

    def __init__(self, tokenizer, stop: Sequence[str], stop_ids: Sequence[int]):
        self.tokenizer, self.stop, self.stop_ids = tokenizer, StopStrings(stop), set(stop_ids)
        self.ids: list[int] = []
        self.text = ""  # decoded so far
        self.sent = 0  # characters of text already released
        self.pending: list[tuple[int, Step]] = []  # (text offset, step) not yet released

    def push(self, step: Step) -> tuple[str, list[Step], bool]:
        """(text to release, steps to release, stopped by a stop token / string)."""
        if step.token in self.stop_ids:
            return self._release(len(self.text)) + (True,)
        offset = len(self.text)
        self.ids.append(step.token)
        self.text = self.tokenizer.decode(self.ids)
        self.pending.append((offset, step))
        # a stop string completed now ends in the unreleased tail
        hit = self.stop.find(self.text, max(0, self.sent - self.stop.longest)) if self.stop else None
        if hit is not None:
            self.text = self.text[:hit]
            return self._release(hit) + (True,)
        tail = self.text[self.sent:]
        if tail.endswith("\ufffd") or self.stop.may_begin(tail):
            return "", [], False
        return self._release(len(self.text)) + (False,)

    def flush(self) -> tuple[str, list[Step]]:
        return self._release(len(self.text))

    def _release(self, upto: int) -> tuple[str, list[Step]]:
        text = self.text[self.sent:upto]
        steps = [s for off, s in self.pending if off < upto]
        self.sent, self.pending = max(self.sent, upto), []
        return text, steps
