"""Extractive QA targets and span decoding, on a real WordPiece vocabulary."""

import pytest
import torch

from tfamily.objectives.span import QAExample, SpanObjective, best_spans
from tfamily.tokenizers import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    text = "John lives in Berlin near the park . Where does live ? Who the cat sat on mat"
    return Tokenizer.train("wordpiece", [text] * 20, vocab_size=120)


def test_targets_point_at_the_answer_tokens(tokenizer):
    obj = SpanObjective(tokenizer, 40)
    ex = QAExample("Where does John live?", "John lives in Berlin near the park.", ["Berlin near the park"])
    batch = obj.prepare([ex])
    first, last = batch.targets[0].tolist()
    spans = batch.extra["spans"][0]
    assert ex.context[spans[first][0]:spans[last][1]] == "Berlin near the park"
    assert batch.inputs["token_type_ids"][0, first] == 1  # inside the context segment


def test_an_answer_cut_off_by_the_length_limit_points_at_cls(tokenizer):
    ex = QAExample("Where?", "John lives in the park near Berlin", ["Berlin"])
    batch = SpanObjective(tokenizer, 9).prepare([ex])
    assert batch.targets[0].tolist() == [0, 0]


def test_best_span_stays_in_the_context_and_in_order():
    spans = [[None, None, (0, 4), (5, 9), (10, 14), None]]
    logits = torch.zeros(1, 6, 2)
    logits[0, 0] = 100  # [CLS] scores highest but is not context
    logits[0, 4, 0], logits[0, 2, 1] = 5, 5  # a start after the end is not allowed
    logits[0, 3, 0], logits[0, 3, 1] = 3, 3
    assert best_spans(logits, spans) == [(3, 3)]


def test_an_answer_missing_from_its_context_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="not in its context"):
        SpanObjective(tokenizer, 40).prepare([QAExample("Who?", "The cat sat.", ["dog"])])
