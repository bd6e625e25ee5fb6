import copy

import pytest
import torch
import torch.nn.functional as F

from tfamily.generation import SamplingParams, decode
from tfamily.models import build_model
from tfamily.nn.quant import Int8Linear, convert_weights
from tfamily.presets import get_preset, tiny_version


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset("gpt2-small").config())).eval()


def test_int8_linear_is_the_linear_layer_of_its_dequantised_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = Int8Linear(lin)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() <= 127
    # each row keeps its largest entry exactly at +-127 steps, every entry within half a step
    err = (q.dequantized().float() - lin.weight.detach()).abs()
    assert (err <= q.scale.float()[:, None] * 0.5 + 1e-3).all()
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    want = F.linear(x.float(), q.dequantized().float(), q.bias.float())
    torch.testing.assert_close(q(x).float(), want, atol=0.05, rtol=0.02)
    assert q(x).shape == (3, 5, 48)


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_converted_model_predicts_like_fp32(model, fmt):
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    converted = convert_weights(copy.deepcopy(model), fmt)
    if fmt == "int8":
        assert not any(isinstance(m, torch.nn.Linear) for m in converted.modules())
    with torch.inference_mode():
        ref = model(ids).logits.log_softmax(-1)
        new = converted(ids).logits.float().log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1).mean()
    assert kl < 0.01
    assert converted.make_cache(1, 4).k.dtype == torch.bfloat16


def test_converted_model_decodes(model):
    converted = convert_weights(copy.deepcopy(model), "int8")
    steps = [s for group in decode(converted, [[5, 6, 7], [8]], SamplingParams(max_new_tokens=4, temperature=0))
             for s in group]
    assert len(steps) == 8 and all(0 < s.prob <= 1 for s in steps)


def test_unknown_format_names_the_choices(model):
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        convert_weights(model, "int4")
