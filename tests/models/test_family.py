"""The family registry is the one door: every preset has a family, every kind a family names
exists in the layer that implements it, and no code outside the registry and config.py
compares ``cfg.arch``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tfamily.config import ModelConfig
from tfamily.models import build_model
from tfamily.models.family import ABILITIES, FAMILIES, families_that, family_of
from tfamily.presets import PRESETS, tiny_version
from tfamily.training.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {ROOT / "tfamily" / "models" / "family.py", ROOT / "tfamily" / "config.py"}
# any read of cfg.arch: comparing it, keying a table by it, even printing it is the registry's
# job (messages print the Family, which names itself)
ARCH_READ = re.compile(r"\.arch\b")


def python_files():
    for folder in ("tfamily", "benchmarks", "scripts"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_arch_read_outside_the_registry():
    found = []
    for path in python_files():
        if path in ALLOWED:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if ARCH_READ.search(code):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "ask tfamily.models.family.family_of(cfg) instead of reading cfg.arch:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_should():
    for bad in ('if cfg.arch == "glm":', "x = STATES[model.cfg.arch]", 'if cfg.arch not in ("a", "b"):',
                "b = BUILDERS.get(cfg.arch)", 'ok = cfg.arch in STATES', 'print(f"family {cfg.arch!r}")'):
        assert ARCH_READ.search(bad), bad
    for fine in ("arch: str = 'decoder'", "family_of(cfg)", "self.archive = 1", "architecture"):
        assert not ARCH_READ.search(fine), fine


def test_a_family_names_itself_in_messages():
    assert str(family_of("encoder")) == "family 'encoder' (bidirectional encoder (BERT))"


def test_every_config_arch_has_a_family_and_every_preset_builds_through_it():
    from typing import get_args
    arches = set(get_args(ModelConfig.__dataclass_fields__["arch"].type)) if get_args(
        ModelConfig.__dataclass_fields__["arch"].type) else {p.config().arch for p in PRESETS.values()}
    assert arches <= set(FAMILIES)
    for name, preset in PRESETS.items():
        cfg = tiny_version(preset.config())
        family = family_of(cfg)
        assert isinstance(build_model(cfg), family.builder), name


def test_each_family_names_kinds_that_exist():
    from tfamily.generation.states import STATES
    for family in FAMILIES.values():
        assert family.abilities <= set(ABILITIES)
        assert family.recipe in RECIPES
        assert (family.decoding is not None) == family.can("generate"), family.arch
        if family.decoding is not None:
            assert family.decoding in STATES, family.decoding
        assert family.prompt in ("continue", "source", "blanks")
        assert family.evaluation in (None, "perplexity", "segments", "bleu")


def test_abilities_as_documented():
    assert {f.name for f in families_that("translate")} == {"encoder-decoder", "rnn-seq2seq"}
    assert {f.name for f in families_that("infill")} == {"glm"}
    assert {f.name for f in families_that("classify")} == {"encoder", "decoder", "birnn"}
    assert not family_of("encoder").can("generate")
    with pytest.raises(KeyError, match="unknown ability"):
        family_of("decoder").can("fly")
    with pytest.raises(ValueError, match="unknown architecture 'cnn'"):
        family_of("cnn")
    assert family_of("rnn").mixing == "recurrence" and family_of("rnn").can("generate")


def test_data_fields_fit_the_tokenizer_and_window():
    from tfamily.tokenizers import Tokenizer
    from tfamily.tokenizers.special import GLM_SPECIAL_TOKENS
    tok = Tokenizer.train("char", ["hello world"], special_tokens=GLM_SPECIAL_TOKENS)
    assert family_of("decoder").data_fields(tok, 64) == {"max_seq_len": 64}
    glm = family_of("glm").data_fields(tok, 64)
    assert glm["decoder_start_token_id"] == tok.special_ids["span_start"] and glm["max_seq_len"] > 65
    assert family_of("transformer-xl").data_fields(tok, 64) == {}
