"""LanguageBind tower configurations, read from a published ``config.json``.

The published repositories (``LanguageBind/LanguageBind_Audio_FT``, ``_Video_FT``, ``_Image``) hold
one CLIP-style model each: a text transformer, a vision transformer (over images, video frames or a
3-channel fbank "image") and two projection heads. Fields absent from a file take the defaults of the
publisher's configuration classes, as their loader would.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["TextConfig", "VisionConfig", "TowerConfig", "read_config", "TOWER_KINDS", "ACTIVATIONS"]

TOWER_KINDS = ("image", "video", "audio")
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_new")
_MODEL_TYPES = {"LanguageBindImage": "image", "LanguageBindVideo": "video", "LanguageBindAudio": "audio"}


@dataclass(frozen=True)
class TextConfig:
    """The language tower (a CLIP text transformer, causal, pooled at the end-of-text token)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class VisionConfig:
    """The modality tower: a ViT over (3, H, W) inputs.

    image towers: H = W = ``image_size``. audio towers: an fbank "image" of ``num_mel_bins`` x
    ``target_length`` with its own position grid. video towers: ``num_frames`` frames with temporal
    attention and temporal embeddings in every layer (``add_time_attn``); ``clip_type == "vl_new"``
    marks the 3-D patch embedding with one class token per frame.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    add_time_attn: bool = False
    num_frames: int = 1
    lora_r: int = 2  # LoRA adapters are judged by the tensors a file holds (checkpoint.account), not by this
    num_mel_bins: int = 0
    target_length: int = 0
    audio_sample_rate: int = 16000
    audio_mean: float = 0.5
    audio_std: float = 0.5
    clip_type: str = "vl"
    tube_size: int = 1

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along (height, width)."""
        h, w = self.input_size
        return h // self.patch_size, w // self.patch_size

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of one input: the fbank size for audio towers, the image size otherwise."""
        if self.is_audio:
            return int(self.num_mel_bins), int(self.target_length)
        return int(self.image_size), int(self.image_size)

    @property
    def is_audio(self) -> bool:
        # the publisher resizes the position grid to the fbank size only for towers without time attention
        return bool(self.num_mel_bins) and bool(self.target_length) and not self.add_time_attn

    @property
    def num_positions(self) -> int:
        gh, gw = self.grid
        return gh * gw + 1

    @property
    def frames_3d(self) -> bool:
        return self.add_time_attn and self.clip_type == "vl_new"


@dataclass(frozen=True)
class TowerConfig:
    """One published checkpoint's architecture."""

    kind: str
    text: TextConfig
    vision: VisionConfig
    projection_dim: int
    source: str = ""


def _pick(cls: type, data: Mapping[str, Any]) -> Any:
    names = set(cls.__dataclass_fields__)
    kwargs = {k: v for k, v in data.items() if k in names}
    return cls(**kwargs)


def _kind_of(vision: VisionConfig) -> str:
    if vision.add_time_attn:
        return "video"
    return "audio" if vision.is_audio else "image"


def read_config(path: str | os.PathLike, expected_kind: str | None = None) -> TowerConfig:
    """Parse a LanguageBind ``config.json``; ValueError naming the file for anything we cannot build."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config.json not found (a LanguageBind checkpoint directory holds "
                                f"config.json and its weights file)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text_config"), dict) \
            or not isinstance(data.get("vision_config"), dict):
        raise ValueError(f"{path}: not a LanguageBind config (needs 'text_config' and 'vision_config' objects)")
    try:
        text = _pick(TextConfig, data["text_config"])
        vision = _pick(VisionConfig, data["vision_config"])
        projection_dim = int(data.get("projection_dim", 512))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed field ({e})") from None
    kind = _kind_of(vision)
    declared = _MODEL_TYPES.get(str(data.get("model_type", "")))
    if declared is not None and declared != kind:
        raise ValueError(f"{path}: model_type {data['model_type']!r} but the vision config describes a {kind} tower")
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"{path}: expected a LanguageBind {expected_kind} tower, this config describes a {kind} tower")
    for where, act in (("text_config", text.hidden_act), ("vision_config", vision.hidden_act)):
        if act not in ACTIVATIONS:
            raise ValueError(f"{path}: {where}.hidden_act {act!r} is not supported (expected one of {ACTIVATIONS})")
    if vision.frames_3d and int(vision.tube_size) != 1:
        raise ValueError(f"{path}: vision_config.tube_size = {vision.tube_size}: only tube_size 1 is supported")
    h, w = vision.input_size
    if h % vision.patch_size or w % vision.patch_size:
        raise ValueError(f"{path}: input {h}x{w} is not a whole number of {vision.patch_size}-pixel patches")
    for where, cfg in (("text_config", text), ("vision_config", vision)):
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"{path}: {where}.hidden_size {cfg.hidden_size} is not divisible by "
                             f"num_attention_heads {cfg.num_attention_heads}")
    return TowerConfig(kind, text, vision, projection_dim, path)
