"""Fine-tuning: contrastive alignment of the image, video and audio towers with text.

Nothing in the search path imports this package.
"""
from .config import (
    DataConfig,
    InversionTrainConfig,
    LockConfig,
    LoraConfig,
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
from .lora import add_lora, lora_parameters, merge_lora, merged_state_dict
from .loss import LogitScale, contrastive_loss, positives_matrix
from .trainer import Trainer, TrainResult, apply_locks, parameter_groups, train

__all__ = [
    "DataConfig",
    "InversionTrainConfig",
    "LockConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "add_lora",
    "apply_locks",
    "config_from_dict",
    "config_to_dict",
    "contrastive_loss",
    "list_recipes",
    "load_recipe",
    "lora_parameters",
    "merge_lora",
    "merged_state_dict",
    "override",
    "parameter_groups",
    "positives_matrix",
    "LogitScale",
    "train",
]
