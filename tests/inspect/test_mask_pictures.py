"""Mask and position pictures: drawn from each family's objective Batch, as the model received it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tfamily.inspect.masks import GALLERY, Example, preset_pictures, preset_tokenizer, spans_of
from tfamily.models.family import family_of
from tfamily.nn.masks import causal_mask
from tfamily.objectives import GLMObjective
from tfamily.objectives.base import IGNORE_INDEX
from tfamily.presets import get_preset


@pytest.fixture(scope="module")
def pictures():
    torch.manual_seed(0)
    return {p.name: p for preset in GALLERY for p in preset_pictures(preset)}


def grid(picture, words):
    return next(g for g in picture.grids if all(w in g.title for w in words))


def row(strip, name):
    return next(values for label, values in strip.rows if name in label)


def test_every_family_has_a_picture(pictures):
    assert set(pictures) == {"gpt-tiny", "llama-tiny", "bert-tiny", "glm-tiny-blanks", "glm-tiny-prefix-lm",
                             "t5-tiny-span-corruption", "bart-tiny-denoising", "transformer-tiny-translation",
                             "txl-tiny"}
    for p in pictures.values():
        assert p.grids and p.strips and p.notes
        assert any(g.kind == "mask" for g in p.grids)


def test_glm_positions_are_the_objectives(pictures):
    """'1 2 3 4 5 6' with 3 and 5 6 blanked: the positions the model read are the objective's row."""
    p = pictures["glm-tiny-blanks"]
    tok = preset_tokenizer(family_of(get_preset("glm-tiny").config()))
    objective = GLMObjective.from_tokenizer(tok)
    assert spans_of(tok, "1 2 3 4 5 6", ("3", "5 6")) == [(2, 1), (4, 2)]  # one token a number
    expected = objective.build_row(np.asarray(tok.encode("1 2 3 4 5 6")), [(2, 1), (4, 2)], np.random.default_rng(0))
    positions = p.positions["backbone.pos_emb"]  # what GLMPositions was called with
    assert positions.tolist() == expected.positions.tolist()
    assert positions[:, :5].tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]  # Part A: 1 2 [MASK] 4 [MASK]
    assert torch.equal(positions, p.batch.inputs["positions"][0])
    tokens = p.strips[0].tokens
    assert tokens[:5] == ["1", "2", "[MASK]", "4", "[MASK]"] and tokens.count("[S]") == 2
    assert sorted(positions[:, 5:].T.tolist()) == [[2, 1], [2, 2], [4, 1], [4, 2], [4, 3]]
    mask = grid(p, ["self-attention mask"]).values
    a = 5
    assert mask[:a, :a].all() and not mask[:a, a:].any()  # Part A: bidirectional, blind to Part B
    assert torch.equal(mask[a:, a:].bool(), causal_mask(5, 5)) and mask[a:, :a].all()  # Part B: causal + Part A


def test_glm_prefix_lm(pictures):
    p = pictures["glm-tiny-prefix-lm"]
    tokens = p.strips[0].tokens
    assert "[gMASK]" in tokens
    a = tokens.index("[gMASK]") + 1
    positions = p.positions["backbone.pos_emb"]
    assert positions[0, :a].tolist() == list(range(a)) and set(positions[0, a:].tolist()) == {a - 1}
    assert positions[1, a:].tolist() == list(range(1, len(tokens) - a + 1))
    mask = grid(p, ["mask"]).values
    assert mask[:a, :a].all() and not mask[:a, a:].any()


def test_bert_segments_masks_and_targets(pictures):
    p = pictures["bert-tiny"]
    strip = p.strips[0]
    assert strip.tokens[0] == "[CLS]" and strip.tokens.count("[SEP]") == 2 and "[MASK]" in strip.tokens
    segments = row(strip, "segment")
    first_sep = strip.tokens.index("[SEP]")
    assert set(segments[:first_sep + 1]) == {"0"} and set(segments[first_sep + 1:]) == {"1"}
    targets = row(strip, "target")
    masked = strip.tokens.index("[MASK]")
    assert targets[masked] != "\u00b7"  # the loss is at the chosen tokens
    assert int((p.batch.targets != IGNORE_INDEX).sum()) == sum(t != "\u00b7" for t in targets)
    assert grid(p, ["self-attention mask"]).values.all()  # every token sees every token


def test_gpt_is_causal_with_counted_positions(pictures):
    for name in ("gpt-tiny", "llama-tiny"):  # learned positions; rotary ones
        p = pictures[name]
        mask = grid(p, ["self-attention mask"]).values
        assert torch.equal(mask.bool(), causal_mask(mask.shape[0], mask.shape[1]))
        (positions,) = p.positions.values()
        assert positions.tolist() == list(range(mask.shape[0]))


def test_t5_sentinels_and_buckets(pictures):
    p = pictures["t5-tiny-span-corruption"]
    source, target = p.strips
    assert "<extra_id_0>" in source.tokens and target.tokens[:2] == ["<s>", "<extra_id_0>"]
    encoder = grid(p, ["enc_rel", "both directions"]).values
    decoder = grid(p, ["dec_rel", "backwards only"]).values
    assert int(encoder.diagonal().max()) == 0 and int(decoder.diagonal().max()) == 0
    after = torch.ones_like(encoder, dtype=torch.bool).triu(1)  # keys after the query
    assert int(encoder[after].min()) >= 16  # the upper half of 32 buckets
    assert int(decoder.triu(1).max()) == 0  # a decoder only looks back: every later key is bucket 0
    assert int(decoder[-1, 0]) == decoder.shape[0] - 1  # small distances are exact buckets
    cross = grid(p, ["cross-attention mask"]).values
    assert cross.shape == (len(target.tokens), len(source.tokens))


def test_bart_corrupted_source_and_original_target(pictures):
    p = pictures["bart-tiny-denoising"]
    source, target = p.strips
    assert "<mask>" in source.tokens
    original = [t for t in row(target, "target") if t != "\u00b7"][:-1]  # less </s>
    assert original == target.tokens[1:]  # the decoder rebuilds the whole text
    assert len(source.tokens) < len(original) + 1


def test_transformer_xl_memory_window(pictures):
    p = pictures["txl-tiny"]
    first = grid(p, ["mask", "segment 1 of 2"]).values
    second = grid(p, ["mask", "segment 2 of 2"])
    t = second.values.shape[0]
    memory = second.values.shape[1] - t
    assert memory == first.shape[0] == 32 and second.col_regions[0] == ("memory", 0, memory)
    assert second.values[:, :memory].all()  # the memory is seen whole
    assert torch.equal(second.values[:, memory:].bool(), causal_mask(t, t))
    distance = grid(p, ["distance"]).values
    assert int(distance[0, memory]) == 0 and int(distance[-1, 0]) == memory + t - 1
    assert [r[0] for r in p.strips[0].regions] == ["segment 1", "segment 2"]


def test_examples_follow_the_arguments():
    (p,) = preset_pictures("glm-tiny", Example(text="a b c d e f g h", spans=((1, 2),)))[:1]
    assert p.strips[0].tokens[:3] == ["a", "[MASK]", "d"]
    (p,) = preset_pictures("transformer-tiny", Example(text="one two => three four"))
    assert p.strips[0].tokens[:2] == ["one", "\u2423two"]
    with pytest.raises(ValueError, match="does not fit"):
        preset_pictures("glm-tiny", Example(text="a b c", spans=((2, 5),)))


def test_spans_of_other_tokenizers():
    from tfamily.tokenizers import Tokenizer
    text = "1 2 3 4 5 6"
    char = Tokenizer.train("char", [text])
    assert spans_of(char, text, ("3", "5 6")) == [(4, 1), (8, 3)]
    bpe = Tokenizer.train("bpe", [text], vocab_size=300)
    (start, length), _ = spans_of(bpe, text, ("3", "5 6"))
    assert bpe.decode(bpe.encode(text)[start:start + length]).strip() == "3"
