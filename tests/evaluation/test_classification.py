"""Classification, entity and QA metrics against hand-computed values."""

import pytest

from tfamily.evaluation import classification_scores, entity_f1, normalize_answer, qa_scores


def test_binary_scores_by_hand():
    gold = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 0, 0, 1, 0, 1]
    r = classification_scores(pred, gold)
    # class 1: tp 3, fp 1, fn 1 -> P = R = F1 = 0.75; class 0: tp 3, fp 1, fn 1 -> 0.75
    assert r.accuracy == 6 / 8
    assert r.positive_f1 == pytest.approx(0.75) and r.macro_f1 == pytest.approx(0.75)
    assert r.per_class[1].support == 4 and r.n == 8


def test_unbalanced_macro_differs_from_accuracy():
    gold = ["pos"] * 8 + ["neg"] * 2
    pred = ["pos"] * 10  # always the majority class
    r = classification_scores(pred, gold, positive="pos")
    assert r.accuracy == 0.8
    # pos: P 0.8, R 1, F1 8/9; neg: no predictions -> 0
    assert r.per_class["pos"].f1 == pytest.approx(8 / 9) and r.per_class["neg"].f1 == 0.0
    assert r.macro_f1 == pytest.approx(4 / 9) and r.positive_f1 == pytest.approx(8 / 9)
    assert r.macro_precision == pytest.approx(0.4) and r.macro_recall == pytest.approx(0.5)


def test_three_classes_have_no_positive_f1():
    r = classification_scores([0, 1, 2, 2], [0, 1, 1, 2])
    assert r.positive_f1 is None
    # 0: 1/1/1; 1: P 1 R .5 F1 2/3; 2: P .5 R 1 F1 2/3
    assert r.macro_f1 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert "accuracy 75.00" in r.format()


def test_classification_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        classification_scores([0, 1], [0])
    with pytest.raises(ValueError, match="no examples"):
        classification_scores([], [])


def test_entity_f1_counts_whole_entities_only():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]  # the ORG is cut short
    r = entity_f1(pred, gold)
    # gold entities: PER, LOC, ORG(3 tokens); predicted: PER, LOC, ORG(2 tokens) -> 2 right of 3 and 3
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3) and r.f1 == pytest.approx(2 / 3)
    assert r.per_type["ORG"].f1 == 0.0 and r.per_type["PER"].f1 == 1.0 and r.per_type["LOC"].support == 1


def test_entity_f1_wrong_type_is_wrong_and_strict_scheme():
    assert entity_f1([["B-LOC", "I-LOC"]], [["B-PER", "I-PER"]]).f1 == 0.0
    # an entity opened by I- counts in the default (conlleval) mode, not in strict IOB2
    assert entity_f1([["I-PER", "I-PER"]], [["B-PER", "I-PER"]]).f1 == 1.0
    assert entity_f1([["I-PER", "I-PER"]], [["B-PER", "I-PER"]], scheme="IOB2").f1 == 0.0
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags but 2 gold"):
        entity_f1([["O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        entity_f1([["O"]], [["O"]], scheme="XYZ")


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an Apple, a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # 'the' only as a whole word


def test_qa_scores_by_hand():
    preds = ["the Eiffel Tower", "Paris France", "1889"]
    golds = [["Eiffel Tower", "tower"], "Paris", ["in 1887", "1887"]]
    r = qa_scores(preds, golds)
    # q1: exact (after normalising) -> EM 1, F1 1; q2: pred {paris, france} vs {paris}: P .5 R 1 F1 2/3;
    # q3: no overlap -> 0
    assert r.exact_match == pytest.approx(1 / 3)
    assert r.f1 == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert r.n == 3 and "exact match 33.33" in r.format()


def test_qa_repeated_tokens_count_once_each():
    # pred "x y y" vs gold "y y z": y is common twice -> P 2/3, R 2/3, F1 2/3
    assert qa_scores(["x y y"], ["y y z"]).f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="question 0 has no gold answer"):
        qa_scores(["x"], [[]])
