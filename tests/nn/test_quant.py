import copy

import pytest
import torch
import torch.nn.functional as F

from tfamily.generation import SamplingParams, decode
from tfamily.models import build_model
from tfamily.nn.linear import ACTIVATIONS, Linear, PackedLinear, linear_act, packing_supported
from tfamily.cli.common import WEIGHT_FORMATS as CLI_FORMATS
from tfamily.nn.quant import WEIGHT_FORMATS, Int4Linear, Int8Linear, convert_weights, quantize_int4
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


def test_int4_codes_are_the_groups_min_to_max_in_15_steps():
    torch.manual_seed(0)
    w = torch.randn(32, 96)
    codes, scale, zero = quantize_int4(w, 32)
    assert codes.dtype == torch.uint8 and codes.max() == 15 and codes.min() == 0 and scale.shape == (32, 3)
    back = (codes.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
    assert ((back - w).abs() <= scale.repeat_interleave(32, 1) / 2 + 1e-6).all()  # within half a step
    groups = w.reshape(32, 3, 32)
    torch.testing.assert_close(back.reshape(32, 3, 32).amin(-1), groups.amin(-1))  # the ends are exact
    torch.testing.assert_close(back.reshape(32, 3, 32).amax(-1), groups.amax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_multiplies_by_its_codes(dtype):
    """The kernel's product equals x @ W^T with W written out from the codes, scales and zeros."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    codes, scale, zero = quantize_int4(lin.weight.detach(), 32)
    q = Int4Linear(codes, scale, zero, lin.bias, dtype)
    s, z = scale.to(dtype).float(), zero.to(dtype).float()  # the kernel's copies are in ``dtype``
    w = (codes.float() - 8) * s.repeat_interleave(32, 1) + z.repeat_interleave(32, 1)  # (48, 64)
    x = torch.randn(3, 5, 64).to(dtype)
    want = F.linear(x.float(), w, lin.bias.detach().to(dtype).float())
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    torch.testing.assert_close(q(x).float(), want, **tol)
    assert q(x).shape == (3, 5, 48) and q(x).dtype == dtype
    torch.testing.assert_close(q.dequantized().float(), w, **tol)
    last = x[:, -1:]  # a strided view, as an LM head sees its last positions
    torch.testing.assert_close(q(last).float(), want[:, -1:], **tol)


def test_stacked_int4_layers_give_their_outputs_side_by_side():
    torch.manual_seed(0)
    layers = [Int4Linear.from_linear(torch.nn.Linear(64, out)) for out in (128, 48)]
    joined = Int4Linear.stacked(layers)
    x = torch.randn(3, 5, 64).bfloat16()
    assert joined.out_features == 176 and joined.extra_repr().startswith("in_features=64, out_features=176")
    assert torch.equal(joined(x), torch.cat([layer(x) for layer in layers], dim=-1))
    # torch packs 64 rows at a time: a first layer of 48 rows would split a block, so it is refused
    assert not Int4Linear.stackable(layers[::-1])
    with pytest.raises(ValueError, match="multiple of 64 rows"):
        Int4Linear.stacked(layers[::-1])
    with pytest.raises(ValueError, match="one input width"):
        Int4Linear.stacked([layers[0], Int4Linear.from_linear(torch.nn.Linear(32, 32))])


def test_int4_linear_refuses_shapes_the_kernel_cannot_take():
    codes, scale, zero = quantize_int4(torch.randn(40, 64), 32)  # 40 rows: not a multiple of 16
    with pytest.raises(ValueError, match=r"\(40, 64\).*out % 16"):
        Int4Linear(codes, scale, zero)


def test_every_format_is_offered_on_the_command_line():
    assert CLI_FORMATS == WEIGHT_FORMATS


@pytest.mark.parametrize("fmt,bound", [("bf16", 0.01), ("int8", 0.01), ("int4", 0.05)])
def test_converted_model_predicts_like_fp32(model, fmt, bound):
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    converted = convert_weights(copy.deepcopy(model), fmt)
    if fmt in ("int8", "int4"):
        assert not any(isinstance(m, torch.nn.Linear) for m in converted.modules())
    if fmt == "int4":  # every layer the kernel can take is 4-bit
        assert any(isinstance(m, Int4Linear) for m in converted.modules())
    with torch.inference_mode():
        ref = model(ids).logits.log_softmax(-1)
        new = converted(ids).logits.float().log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1).mean()
    assert kl < bound
    assert converted.make_cache(1, 4).k.dtype == torch.bfloat16


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_converted_model_decodes(model, fmt):
    converted = convert_weights(copy.deepcopy(model), fmt)
    steps = [s for group in decode(converted, [[5, 6, 7], [8]], SamplingParams(max_new_tokens=4, temperature=0))
             for s in group]
    assert len(steps) == 8 and all(0 < s.prob <= 1 for s in steps)


def test_unknown_format_names_the_choices(model):
    with pytest.raises(ValueError, match="fp32, bf16, int8, int4"):
        convert_weights(model, "int3")


needs_packing = pytest.mark.skipif(not packing_supported(torch.zeros(1)),
                                   reason="this torch cannot pack weights for oneDNN")


@needs_packing
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", [None, "gelu", "gelu_tanh", "relu", "silu"])
def test_packed_linear_is_the_linear_layer(dtype, activation):
    torch.manual_seed(0)
    lin = Linear(24, 40).to(dtype)
    packed = PackedLinear(lin)
    for shape in [(1, 24), (3, 5, 24), (8, 24), (0, 24)]:
        x = torch.randn(*shape, dtype=dtype)
        with torch.no_grad():
            want = lin(x) if activation is None else ACTIVATIONS[activation](lin(x).float()).to(dtype)
            got = packed(x) if activation is None else linear_act(x, packed, activation)
        assert got.shape == want.shape and got.dtype == dtype
        tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(got, want, **tol)


@needs_packing
def test_packed_linear_refuses_gradients_and_other_dtypes():
    packed = PackedLinear(Linear(8, 4))
    with pytest.raises(RuntimeError, match="packed for inference"):
        packed(torch.randn(2, 8, requires_grad=True))
    with pytest.raises(TypeError, match="bfloat16"):
        packed(torch.randn(2, 8, dtype=torch.bfloat16))
    assert list(packed.state_dict()) == ["bias"]
    twin = copy.deepcopy(packed)
    x = torch.randn(3, 8)
    assert torch.equal(twin(x), packed(x))


@needs_packing
def test_packed_model_decodes_like_the_plain_one(model):
    params = SamplingParams(max_new_tokens=6, temperature=0)
    prompts = [[5, 6, 7], [8]]

    def tokens(m):
        return [[s.token for s in group] for group in decode(m, prompts, params)]
    assert tokens(convert_weights(copy.deepcopy(model), "fp32")) == tokens(model)
