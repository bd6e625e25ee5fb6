import torch

from tfamily.config import ModelConfig
from tfamily.nn import Block


def cfg(**kw):
    return ModelConfig(vocab_size=10, d_model=16, n_layer=1, n_head=2, d_ff=32, **kw)


def test_pre_ln_block_is_x_plus_sublayers_of_normed_input():
    block = Block(cfg(norm_placement="pre")).eval()
    x = torch.randn(2, 4, 16)
    h = x + block.attn(block.norm1(x), is_causal=True)
    want = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(block(x, is_causal=True), want)


def test_post_ln_block_normalises_after_the_residual():
    block = Block(cfg(norm_placement="post")).eval()
    x = torch.randn(2, 4, 16)
    h = block.norm1(x + block.attn(x, is_causal=True))
    want = block.norm2(h + block.mlp(h))
    torch.testing.assert_close(block(x, is_causal=True), want)


def test_gated_mlp_and_no_bias():
    block = Block(cfg(gated_mlp=True, bias=False, activation="silu", norm="rmsnorm"))
    assert block.mlp.fc_gate is not None
    assert all(not n.endswith("bias") for n, _ in block.named_parameters())
