"""Family-agnostic building blocks: tensors in, tensors out."""

from .attention import Attention
from .block import Block, Stack
from .cache import KVCache
from .linear import Linear
from .mlp import MLP
from .norms import RMSNorm, make_norm
from .positions import (LearnedPositions, RotaryEmbedding, SinusoidalPositions, apply_rotary, make_positions,
                        make_rotary, positions_from_mask)

__all__ = ["Attention", "Block", "Stack", "KVCache", "Linear", "MLP", "RMSNorm", "make_norm",
           "LearnedPositions", "SinusoidalPositions", "RotaryEmbedding", "apply_rotary", "make_positions",
           "make_rotary", "positions_from_mask"]
