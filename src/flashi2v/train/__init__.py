"""Training: config, objective, parallelism, checkpoints, EMA and the loop (``train``)."""

from .config import TrainConfig, load_config
from .objective import FlashI2VObjective, draw_noise
from .trainer import TrainResult, train

__all__ = ["FlashI2VObjective", "TrainConfig", "TrainResult", "draw_noise", "load_config", "train"]
