"""Encoders: presets (data), the multimodal encoder and its parts (temporal heads, audio tower),
the publishers' towers (LanguageBind, CLAP), deterministic preprocessing, and weights handling."""
from .audio_tower import AudioTower
from .clap import ClapEncoder
from .languagebind import LanguageBindEncoder
from .encoder import FINGERPRINT_FORMAT, MultiModalEncoder, UntrainedAudioWarning, create_encoder
from .preprocess import AudioFrontend, ImagePreprocessor, pad_frames
from .presets import (AudioSpec, ClipSpec, Preset, VideoSpec, get_preset, list_presets, open_clip_preset,
                      preset_from_dict, preset_record)
from .temporal import HEADS, MeanHead, TransformerHead, make_head

__all__ = [
    "AudioFrontend",
    "AudioSpec",
    "AudioTower",
    "ClapEncoder",
    "ClipSpec",
    "FINGERPRINT_FORMAT",
    "HEADS",
    "ImagePreprocessor",
    "LanguageBindEncoder",
    "pad_frames",
    "MeanHead",
    "MultiModalEncoder",
    "Preset",
    "TransformerHead",
    "UntrainedAudioWarning",
    "VideoSpec",
    "create_encoder",
    "get_preset",
    "preset_from_dict",
    "preset_record",
    "open_clip_preset",
    "list_presets",
    "make_head",
]
