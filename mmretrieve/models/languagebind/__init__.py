"""LanguageBind (PKU-YuanGroup, MIT): our implementation of the published towers, their checkpoint
loading (verified key by key) and their preprocessing."""
from .checkpoint import (IGNORED, WEIGHTS_NAMES, Accounting, TowerCheckpoint, account, compare_text_towers, load_tower,
                         open_checkpoint)
from .config import TextConfig, TowerConfig, VisionConfig, read_config
from .encoder import LanguageBindEncoder, cached_towers, create_languagebind_encoder, resolve_towers
from .modules import LanguageBindTower
from .preprocess import LanguageBindAudioFrontend, LanguageBindVisualPreprocessor, chunk_offsets, fbank

__all__ = [
    "Accounting",
    "IGNORED",
    "LanguageBindAudioFrontend",
    "LanguageBindEncoder",
    "LanguageBindTower",
    "LanguageBindVisualPreprocessor",
    "TextConfig",
    "TowerCheckpoint",
    "TowerConfig",
    "VisionConfig",
    "WEIGHTS_NAMES",
    "account",
    "cached_towers",
    "chunk_offsets",
    "compare_text_towers",
    "create_languagebind_encoder",
    "fbank",
    "load_tower",
    "open_checkpoint",
    "read_config",
    "resolve_towers",
]
