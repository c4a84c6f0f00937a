"""Training: typed configs, the data module, the Lightning module, imbalance handling, runs."""

from medfusion.train.config import TrainConfig, load_train_config, save_train_config
from medfusion.train.run import build_run, train

__all__ = ["TrainConfig", "build_run", "load_train_config", "save_train_config", "train"]
