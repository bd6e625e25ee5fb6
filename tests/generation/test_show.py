"""The per-token table keeps its columns when tokens are Chinese (two terminal columns a character)."""

import math

from tfamily.generation.decode import Step
from tfamily.generation.show import cells, format_steps


class Names:
    """A tokenizer stand-in: token id -> its text."""
    texts = {0: "北京", 1: "Paris", 2: "中国的首都是北京", 3: "\n"}

    def token_text(self, i: int) -> str:
        return self.texts[i]


def test_cells_counts_wide_characters_twice():
    assert (cells("ab"), cells("北京"), cells("a北")) == (2, 4, 3)


def test_probability_column_lines_up_for_chinese_and_latin_tokens():
    steps = [Step(token=t, logprob=math.log(0.5), top=[(0, math.log(0.3)), (1, math.log(0.2))], index=i) for i, t in enumerate([0, 1, 2, 3])]
    rows = format_steps(steps, Names()).splitlines()[1:-1]  # the token rows
    starts = {cells(row[:row.index("0.500")]) for row in rows}
    assert len(starts) == 1  # the prob column starts at the same terminal column on every row
    assert "…" in rows[2]  # a token wider than its cell is cut
