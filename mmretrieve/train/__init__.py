"""Fine-tuning: contrastive alignment of the image, video and audio towers with text.

Nothing in the search path imports this package.
"""
from .config import (
    DataConfig,
    LockConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_recipes,
    load_recipe,
    override,
)
from .loss import LogitScale, contrastive_loss, positives_matrix
from .trainer import Trainer, TrainResult, apply_locks, parameter_groups, train

__all__ = [
    "DataConfig",
    "LockConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_locks",
    "config_from_dict",
    "config_to_dict",
    "contrastive_loss",
    "list_recipes",
    "load_recipe",
    "override",
    "parameter_groups",
    "positives_matrix",
    "LogitScale",
    "train",
]
