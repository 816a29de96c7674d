"""LanguageBind's preprocessing, reproduced deterministically (CPU, picklable).

Audio (the publisher's ``AudioTransform``): mono samples at 16 kHz, mean removed, Kaldi fbank
(``torchaudio.compliance.kaldi.fbank``: 25 ms Hanning frames every 10 ms, HTK-compatible, no energy,
no dither, 112 mel bins) -> (frames, 112). Shorter than ``target_length`` (1036) frames: the fbank is
tiled whole and cut to 1036 frames, the same chunk three times. Exactly 1036: three times. Longer:
three 1036-frame chunks starting at the first offset of the front, middle and back third of the
possible offsets (the publisher draws a random offset in each third; we take each third's first,
as their commented-out fixed variant does, so the same file gives the same vector). Then transposed
to (3, 112, 1036) and normalised as ``(x - mean) / (2 * std)`` with the checkpoint's constants.

Images (their ``get_image_transform``): to [0, 1], shortest side resized to 224 (bicubic,
antialiased; the long side truncated as torchvision does), centre crop 224, CLIP mean/std.
Video frames (their decord path): to [0, 1], CLIP mean/std, shortest side scaled to 224 (bilinear,
the long side floored, as pytorchvideo's ``ShortSideScale``), centre crop 224. Their training-time
random horizontal flip, which their processor also applies at inference, is left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import MediaError
from ..preprocess import frame_array, to_hwc_uint8

__all__ = ["LanguageBindAudioFrontend", "LanguageBindVisualPreprocessor", "chunk_offsets", "fbank",
           "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def fbank(samples: torch.Tensor, sample_rate: int, num_mel_bins: int) -> torch.Tensor:
    """(frames, num_mel_bins) Kaldi fbank of mono samples, mean removed first, with the publisher's parameters."""
    import torchaudio.compliance.kaldi as kaldi

    wav = samples.reshape(1, -1).to(torch.float32)
    wav = wav - wav.mean()
    return kaldi.fbank(wav, htk_compat=True, sample_frequency=sample_rate, use_energy=False,
                       window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0, frame_length=25,
                       frame_shift=10)


def chunk_offsets(total_frames: int, target: int) -> tuple[int, int, int]:
    """Start frames of the front, middle and back chunks of a fbank longer than ``target`` frames:
    the first offset of each third of ``0 .. total_frames - target`` (a third that is empty uses 0)."""
    if total_frames <= target:
        raise ValueError(f"chunk_offsets: {total_frames} frames is not longer than {target}")
    parts = np.array_split(np.arange(total_frames - target + 1), 3)
    return tuple(int(p[0]) if len(p) else 0 for p in parts)  # type: ignore[return-value]


@dataclass(frozen=True)
class LanguageBindAudioFrontend:
    """Mono float samples at ``sample_rate`` -> (3, num_mel_bins, target_length) float32."""

    sample_rate: int = 16000
    num_mel_bins: int = 112
    target_length: int = 1036
    mean: float = -4.2677393
    std: float = 4.5689974

    def __call__(self, samples: Any) -> torch.Tensor:
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise MediaError(None, f"audio samples must be mono 1-D, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise MediaError(None, f"audio samples must be float, got dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise MediaError(None, "audio contains NaN or infinite samples")
        if x.size < self.sample_rate * 25 // 1000:
            raise MediaError(None, f"audio has {x.size} samples; at least one 25 ms frame "
                                   f"({self.sample_rate * 25 // 1000} samples) is needed")
        with torch.no_grad():
            mel = fbank(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.sample_rate,
                        self.num_mel_bins)
        return self.from_fbank(mel)

    def from_fbank(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, bins) fbank -> the normalised three-chunk input (3, bins, target_length)."""
        n, target = mel.shape[0], self.target_length
        if n > target:
            chunks = [mel[o : o + target] for o in chunk_offsets(n, target)]
        else:
            if n < target:
                mel = mel.repeat(target // n + 1, 1)[:target]
            chunks = [mel, mel, mel]
        out = torch.stack(chunks).transpose(1, 2)
        return ((out - self.mean) / (self.std * 2)).contiguous()

    def describe(self) -> dict:
        """Parameters that change the input (for the encoder fingerprint)."""
        return {"kind": "kaldi-fbank", "sample_rate": self.sample_rate, "num_mel_bins": self.num_mel_bins,
                "target_length": self.target_length, "mean": self.mean, "std": self.std, "frame_length_ms": 25,
                "frame_shift_ms": 10, "window": "hanning", "htk_compat": True, "dither": 0.0,
                "short": "tile-then-cut", "long": "front/middle/back chunks at each third's first offset"}


@dataclass(frozen=True)
class LanguageBindVisualPreprocessor:
    """Images (``__call__``) and video frames (``frames``), each as the publisher's processor treats them."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    chunk: int = 16

    def __call__(self, image: Any) -> torch.Tensor:
        """One image (PIL, HWC array, tensor) -> (3, S, S) float32."""
        import torchvision.transforms.functional as TF

        x = torch.from_numpy(np.array(to_hwc_uint8(image), copy=True)).permute(2, 0, 1).float().div_(255.0)
        h, w = x.shape[1:]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)
        size = [self.size, new_long] if h <= w else [new_long, self.size]
        if (h, w) != tuple(size):
            x = TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.size, self.size])
        return TF.normalize(x, list(self.mean), list(self.std))

    def frames(self, frames: Any) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames -> (T, 3, S, S) float32."""
        arr = frame_array(frames)
        s = self.size
        h, w = arr.shape[1:3]
        if w < h:
            nh, nw = int(math.floor(h / w * s)), s
        else:
            nh, nw = s, int(math.floor(w / h * s))
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        out = torch.empty((arr.shape[0], 3, s, s), dtype=torch.float32)
        for i in range(0, arr.shape[0], self.chunk):
            x = torch.from_numpy(np.array(arr[i : i + self.chunk], copy=True)).permute(0, 3, 1, 2).float() / 255.0
            x = (x - mean) / std
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
            out[i : i + x.shape[0]] = x[:, :, top : top + s, left : left + s]
        return out

    def describe(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "image": "resize-shortest bicubic antialias (long side truncated), centre crop",
                "frames": "normalise, resize-shortest bilinear (long side floored), centre crop, no flip"}
