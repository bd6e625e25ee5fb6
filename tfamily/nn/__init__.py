"""Family-agnostic building blocks: tensors in, tensors out."""

from .attention import Attention
from .block import Block, Stack
from .cache import KVCache
from .mlp import MLP
from .norms import RMSNorm, make_norm
from .positions import LearnedPositions, SinusoidalPositions, make_positions, positions_from_mask

__all__ = ["Attention", "Block", "Stack", "KVCache", "MLP", "RMSNorm", "make_norm",
           "LearnedPositions", "SinusoidalPositions", "make_positions", "positions_from_mask"]
