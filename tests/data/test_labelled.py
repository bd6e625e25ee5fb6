"""Labelled TSV and CoNLL reading / writing, deduplication and splitting."""

import numpy as np
import pytest

from tfamily.data.labelled import (
    deduplicate,
    read_conll,
    read_labelled_tsv,
    split_examples,
    write_conll,
    write_labelled_tsv,
)


def test_tsv_round_trip_cleans_tabs_and_newlines(tmp_path):
    path = tmp_path / "x.tsv"
    n = write_labelled_tsv(path, [("pos", "Great\tfun,\nreally"), ("neg", "  dull  ")])
    assert n == 2 and path.read_text(encoding="utf-8") == "pos\tGreat fun, really\nneg\tdull\n"
    data = read_labelled_tsv(path)
    assert data.texts == ["Great fun, really", "dull"] and data.labels == ["pos", "neg"]
    assert data.label_names == ["neg", "pos"] and data.label_ids().tolist() == [1, 0]
    assert data.balance() == {"neg": 1, "pos": 1} and data.texts_b is None


def test_tsv_pairs_and_label_ids_with_given_names(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\ufeffentail\tA man sleeps.\tA person rests.\n\ncontradict\tA dog.\tA cat.\n", encoding="utf-8")
    data = read_labelled_tsv(path)
    assert data.texts_b == ["A person rests.", "A cat."] and data.labels == ["entail", "contradict"]
    assert data.label_ids(["contradict", "entail", "neutral"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="pairs.tsv: label\\(s\\) 'entail' are not among"):
        data.label_ids(["contradict"])


@pytest.mark.parametrize("content, message", [
    ("pos\tok\nno tab here\n", r"bad.tsv, line 2: expected 'label<TAB>text'"),
    ("pos\tok\npos\ta\tb\n", r"bad.tsv, line 2: 3 fields, but the lines before have 2"),
    ("\tsome text\n", r"bad.tsv, line 1: empty label"),
    ("pos\t  \n", r"bad.tsv, line 1: empty text"),
    ("\n\n", r"bad.tsv has no examples"),
])
def test_tsv_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_labelled_tsv(path)


def test_tsv_not_utf8_and_missing(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"pos\tok\npos\tcaf\xe9\n")
    with pytest.raises(ValueError, match="latin.tsv, line 2: not UTF-8"):
        read_labelled_tsv(path)
    with pytest.raises(FileNotFoundError):
        read_labelled_tsv(tmp_path / "nope.tsv")


def test_conll_round_trip_and_formats(tmp_path):
    path = tmp_path / "ner.conll"
    write_conll(path, [(["江", "泽", "民", "说"], ["B-PER", "I-PER", "I-PER", "O"]), (["北", "京"], ["B-LOC", "I-LOC"])])
    data = read_conll(path)
    assert data.tokens == [["江", "泽", "民", "说"], ["北", "京"]]
    assert data.tag_names == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    assert data.entity_counts() == {"LOC": 1, "PER": 1}
    conll2003 = tmp_path / "en.txt"  # the CoNLL-2003 layout: space-separated, tag last, DOCSTART lines
    conll2003.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n",
                         encoding="utf-8")
    data = read_conll(conll2003)
    assert data.tokens == [["EU", "rejects"], ["Peter"]] and data.tags == [["B-ORG", "O"], ["B-PER"]]


def test_conll_errors(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU\tB-ORG\nrejects\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.conll, line 2: expected 'token<TAB>tag'"):
        read_conll(path)
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        write_conll(tmp_path / "w.conll", [(["a", "b"], ["O"])])
    with pytest.raises(ValueError, match="holds a tab"):
        write_conll(tmp_path / "w.conll", [(["a\tb"], ["O"])])


def test_deduplicate_keeps_first_and_drops_texts_with_both_labels():
    examples = [("pos", "good"), ("pos", "good "), ("neg", "bad"), ("pos", "meh"), ("neg", "meh"), ("neg", "bad"),
                ("pos", "meh"), ("pos", "fine")]
    kept, stats = deduplicate(examples)
    assert kept == [("pos", "good"), ("neg", "bad"), ("pos", "fine")]
    assert (stats.seen, stats.kept, stats.conflicting_texts, stats.dropped_conflicting, stats.duplicates) == (8, 3, 1, 3, 2)


def test_split_is_seeded_disjoint_and_sized():
    items = list(range(1000))
    parts = split_examples(items, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [800, 100, 100]
    assert sorted(sum(parts, [])) == items
    assert split_examples(items, seed=3) == parts and split_examples(items, seed=4) != parts
    with pytest.raises(ValueError, match="sum to 1"):
        split_examples(items, (0.8, 0.1))


def test_grouped_split_keeps_each_group_on_one_side():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, size=1000).tolist()
    items = list(range(1000))
    parts = split_examples(items, (0.8, 0.1, 0.1), seed=0, groups=groups)
    sides = [{groups[i] for i in part} for part in parts]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert abs(len(parts[0]) - 800) < 60 and len(parts[1]) > 0 and len(parts[2]) > 0


def test_encode_tagged_puts_each_tag_on_the_first_piece(tmp_path):
    from tfamily.data.labelled import IGNORE_INDEX, encode_tagged
    from tfamily.tokenizers import Tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "wash", "##ington", "visited", "北", "京"]),
                     encoding="utf-8")
    tok = Tokenizer.from_vocab_txt(vocab)
    names = ["O", "B-LOC", "I-LOC", "B-PER"]
    enc = encode_tagged(tok, ["Washington", "visited", "北", "京", "\x00"], ["B-PER", "O", "B-LOC", "I-LOC", "O"], names)
    assert [tok.id_to_token(i) for i in enc.ids] == ["wash", "##ington", "visited", "北", "京"]
    assert enc.labels == [3, IGNORE_INDEX, 0, 1, 2]
    assert enc.first_piece == [0, 2, 3, 4, -1]  # the control character gave no piece
    assert encode_tagged(tok, ["visited"]).labels is None
    with pytest.raises(ValueError, match="'B-ORG' are not among"):
        encode_tagged(tok, ["visited"], ["B-ORG"], names)
    with pytest.raises(ValueError, match="1 tokens but 2 tags"):
        encode_tagged(tok, ["visited"], ["O", "O"], names)
