"""The trainer shared by every family."""

from .config import TrainConfig
from .schedule import SCHEDULES, warmup_cosine
from .optim import make_optimizers
from .trainer import Trainer, plot_losses

__all__ = ["TrainConfig", "Trainer", "make_optimizers", "plot_losses", "SCHEDULES", "warmup_cosine"]
