"""The trainer shared by every family."""

from .config import TrainConfig
from .schedule import SCHEDULES, warmup_cosine
from .trainer import Trainer, make_optimizer, plot_losses

__all__ = ["TrainConfig", "Trainer", "make_optimizer", "plot_losses", "SCHEDULES", "warmup_cosine"]
