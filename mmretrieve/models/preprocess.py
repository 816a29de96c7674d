"""Deterministic preprocessing, CPU only, picklable (safe to ship to DataLoader workers).

Images and video frames share ONE tensor path (``ImagePreprocessor.frames``): resize the shortest
side to S (bicubic, antialiased, in float), centre-crop S x S, clamp to [0, 1], normalise. An image
is processed as a 1-frame video, so an image and the same image as a video give identical pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MediaError
from .presets import AudioSpec

__all__ = ["ImagePreprocessor", "AudioFrontend", "to_hwc_uint8", "frame_array", "pad_frames"]


def to_hwc_uint8(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, a numpy array (HWC/HW, uint8 or float in [0, 1]) or a
    torch tensor (CHW or HWC). Anything else -> MediaError naming the shape/dtype."""
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise MediaError(None, f"cannot use a {type(image).__name__} as an image (expected PIL image, array or tensor)")
    arr = image
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(None, f"image array must be (H, W, 3) or (H, W), got shape {image.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise MediaError(None, f"image array must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise MediaError(None, "image array contains NaN or infinite values")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def frame_array(frames: Any) -> np.ndarray:
    """Video frames (array or tensor) checked to be (T, H, W, 3) uint8 with T >= 1, as a numpy array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] == 0 or min(arr.shape[1:3]) == 0:
        raise MediaError(None, f"frames must be (T, H, W, 3) with T >= 1, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise MediaError(None, f"frames must be uint8, got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize shortest side -> centre crop -> normalise, for images and frames alike."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    chunk: int = 16  # frames resized at once: bounds memory for long, large clips

    interpolation = "bicubic"
    resize_mode = "shortest"

    def __call__(self, image: Any) -> torch.Tensor:
        """One image (PIL, HWC array, tensor) -> (3, S, S) float32."""
        return self.frames(to_hwc_uint8(image)[None])[0]

    def frames(self, frames: Any) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames -> (T, 3, S, S) float32."""
        arr = frame_array(frames)
        s = self.size
        out = torch.empty((arr.shape[0], 3, s, s), dtype=torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        h, w = arr.shape[1:3]
        scale = s / min(h, w)
        nh, nw = max(s, int(round(h * scale))), max(s, int(round(w * scale)))
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        for i in range(0, arr.shape[0], self.chunk):
            x = torch.from_numpy(np.array(arr[i : i + self.chunk], copy=True)).permute(0, 3, 1, 2).float().div_(255.0)
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            x = x[:, :, top : top + s, left : left + s].clamp_(0.0, 1.0)
            out[i : i + x.shape[0]] = (x - mean) / std
        return out

    def describe(self) -> dict:
        """Parameters that change the pixels (for the encoder fingerprint)."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "antialias": True, "resize_mode": self.resize_mode,
                "crop": "center"}


@dataclass(frozen=True)
class AudioFrontend:
    """Mono float32 samples at ``spec.sample_rate`` -> (1, n_mels, target_frames) normalised log-mel."""

    spec: AudioSpec

    @cached_property
    def _mel(self) -> torch.nn.Module:
        import torchaudio

        a = self.spec
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=a.sample_rate, n_fft=a.n_fft, win_length=a.n_fft, hop_length=a.hop_length,
            n_mels=a.n_mels, power=2.0, center=True, pad_mode="constant", norm=None, mel_scale="htk")

    @property
    def pad_value(self) -> float:
        """The value padded frames take: the normalised log of the mel floor."""
        a = self.spec
        return (math.log(a.mel_floor) - a.norm_mean) / (2.0 * a.norm_std)

    def __call__(self, samples: Any) -> torch.Tensor:
        a = self.spec
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise MediaError(None, f"audio samples must be mono 1-D, got shape {x.shape}")
        if x.size == 0:
            raise MediaError(None, "audio has 0 samples")
        if not np.issubdtype(x.dtype, np.floating):
            raise MediaError(None, f"audio samples must be float, got dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise MediaError(None, "audio contains NaN or infinite samples")
        wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.no_grad():
            mel = self._mel(wav)  # (n_mels, frames)
        logmel = (torch.log(mel.clamp_min(a.mel_floor)) - a.norm_mean) / (2.0 * a.norm_std)
        out = torch.full((1, a.n_mels, a.target_frames), self.pad_value, dtype=torch.float32)
        n = min(a.target_frames, logmel.shape[1])
        out[0, :, :n] = logmel[:, :n]
        return out

    def describe(self) -> dict:
        """Parameters that change the spectrogram (for the encoder fingerprint)."""
        from dataclasses import asdict

        return {**asdict(self.spec), "power": 2.0, "mel_scale": "htk", "center": True, "pad": "floor"}


def pad_frames(clips: "Sequence[torch.Tensor]") -> "tuple[torch.Tensor, torch.Tensor]":
    """Stack clips of (T_i, 3, S, S) frames into (B, T_max, 3, S, S), zero-padded, and a (B, T_max) mask
    that is True on real frames — the input of ``encode_video``."""
    longest = max(t.shape[0] for t in clips)
    frames = clips[0].new_zeros((len(clips), longest) + tuple(clips[0].shape[1:]))
    mask = torch.zeros((len(clips), longest), dtype=torch.bool)
    for i, t in enumerate(clips):
        frames[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return frames, mask
