import pytest

from tfamily.config import ConfigError, ModelConfig
from tfamily.presets import PRESETS, get_preset


def test_json_round_trip_is_exact():
    cfg = get_preset("gpt2-small").config()
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("field, value, message", [
    ("norm", "batchnorm", "norm must be one of"),
    ("n_head", 5, "divisible by n_head"),
    ("d_model", 0, "d_model must be positive"),
    ("dropout", 1.5, "dropout"),
    ("bias", "yes", "bias must be bool"),
    ("n_layer", 2.5, "n_layer must be int"),
])
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{field: value})


def test_unknown_fields_are_named():
    with pytest.raises(ConfigError, match="unknown config field.*n_layers"):
        ModelConfig.from_dict({"n_layers": 3})
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json("{nope")


def test_defaults_fill_derived_fields():
    cfg = ModelConfig(d_model=64, n_head=4)
    assert cfg.d_ff == 256 and cfg.n_kv_head == 4 and cfg.head_dim == 16


def test_every_preset_has_a_source_and_builds_a_valid_config():
    for name, preset in PRESETS.items():
        assert preset.source, name
        assert preset.config().extra["preset"] == name


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="gpt2-small"):
        get_preset("gpt5")


def test_gpt_presets_have_the_papers_shapes():
    sizes = {n: (PRESETS[n].config().n_layer, PRESETS[n].config().d_model) for n in PRESETS}
    assert sizes["gpt1"] == (12, 768)
    assert sizes["gpt2-medium"] == (24, 1024)
    assert sizes["gpt2-large"] == (36, 1280)
    assert sizes["gpt2-xl"] == (48, 1600)
    assert PRESETS["gpt1"].config().norm_placement == "post" and not PRESETS["gpt1"].config().final_norm
