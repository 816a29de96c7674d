"""Encoders: presets (data), the multimodal encoder and its parts (temporal heads, audio tower),
deterministic preprocessing, and weights handling."""
from .audio_tower import AudioTower
from .encoder import FINGERPRINT_FORMAT, MultiModalEncoder, UntrainedAudioWarning, create_encoder
from .preprocess import AudioFrontend, ImagePreprocessor, pad_frames
from .presets import AudioSpec, ClipSpec, Preset, VideoSpec, get_preset, list_presets, open_clip_preset
from .temporal import HEADS, MeanHead, TransformerHead, make_head

__all__ = [
    "AudioFrontend",
    "AudioSpec",
    "AudioTower",
    "ClipSpec",
    "FINGERPRINT_FORMAT",
    "HEADS",
    "ImagePreprocessor",
    "pad_frames",
    "MeanHead",
    "MultiModalEncoder",
    "Preset",
    "TransformerHead",
    "UntrainedAudioWarning",
    "VideoSpec",
    "create_encoder",
    "get_preset",
    "open_clip_preset",
    "list_presets",
    "make_head",
]
