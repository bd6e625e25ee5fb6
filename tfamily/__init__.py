"""tfamily: one readable, fast PyTorch codebase for the Transformer family."""

from .config import ConfigError, ModelConfig

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ConfigError", "__version__"]
