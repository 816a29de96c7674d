"""Audio decoding to mono float32 at a target rate, and deterministic fixed windows."""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MediaError
from .windows import fixed_windows

__all__ = ["AudioClip", "load_audio", "read_audio_with", "AUDIO_BACKENDS", "load_audio_bytes", "audio_from_array", "audio_windows", "MAX_CHANNELS"]

MAX_CHANNELS = 64
"""2-D sample arrays are (num_samples, channels); more channels than this is taken as a transposed array."""


@dataclass(frozen=True)
class AudioClip:
    """One window of audio: mono float32 samples at ``sample_rate``, from ``start`` to ``end`` seconds."""

    start: float
    end: float
    samples: np.ndarray
    sample_rate: int


def _to_float(arr: np.ndarray, where: str | None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(arr.dtype, np.signedinteger):
        return (arr.astype(np.float64) / float(-np.iinfo(arr.dtype).min)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise MediaError(where, f"unsupported audio sample dtype {arr.dtype}")


def _check_rate(rate: Any, where: str | None, argument: str) -> int:
    try:
        ok = float(rate) == int(rate) and int(rate) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise MediaError(where, f"{argument} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _mono_resampled(samples: Any, sample_rate: Any, target_rate: Any, where: str | None) -> np.ndarray:
    """Shared checks + channel averaging + resampling for files and arrays."""
    sr = _check_rate(sample_rate, where, "sample rate")
    target = _check_rate(target_rate, None, "target sample_rate")
    if type(samples).__module__.split(".")[0] == "torch" and hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    arr = np.asarray(samples)
    if arr.ndim == 2:
        if arr.shape[1] > MAX_CHANNELS:
            raise MediaError(
                where,
                f"audio array of shape {arr.shape} has {arr.shape[1]} channels; expected (num_samples, channels) "
                "(transpose a (channels, num_samples) array)",
            )
    elif arr.ndim != 1:
        raise MediaError(where, f"audio must be 1-D (samples) or 2-D (samples, channels), got shape {arr.shape}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise MediaError(where, "no audio samples (empty)")
    arr = _to_float(arr, where)
    if not np.all(np.isfinite(arr)):
        raise MediaError(where, "audio contains NaN or infinite samples")
    mono = arr.mean(axis=1, dtype=np.float64).astype(np.float32) if arr.ndim == 2 else arr
    if sr != target:
        import torch
        import torchaudio.functional as AF

        g = math.gcd(sr, target)
        with torch.inference_mode():
            out = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), sr // g, target // g)
        mono = out.numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


class _NamedBytes(io.BytesIO):
    """A file's bytes in memory that go by the file's name (soundfile and PyAV quote it in their errors)."""

    def __init__(self, data: bytes, name: str | None):
        super().__init__(data)
        self.name = name if name is not None else "<in-memory input>"

    def __repr__(self) -> str:
        return repr(self.name)


def _check_riff_size(path: str | None, data: bytes | None = None) -> None:
    """WAV/AIFF headers state the file's size; libsndfile silently reads a truncated file's remainder.
    ``data``: the file's bytes when it is in memory (``path`` then only names it)."""
    if data is not None:
        size, head = len(data), data[:12]
    else:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
    if len(head) < 12:
        return
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        declared = int.from_bytes(head[4:8], "little" if head[:4] == b"RIFF" else "big")
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        declared = int.from_bytes(head[4:8], "big")
    else:
        return
    if 0 < declared < 0xFFFFFFF0 and declared + 8 > size:  # 0 / 0xFFFFFFFF: streaming writers
        raise MediaError(path, f"truncated: header declares {declared + 8} bytes, file has {size}")


def _read_soundfile(path: str | None, data: bytes | None = None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    _check_riff_size(path, data)

    with sf.SoundFile(path if data is None else _NamedBytes(data, path)) as f:
        rate = f.samplerate
        declared = f.frames
        fmt = f.format
        samples = f.read(dtype="float32", always_2d=True)
    # compressed formats may only estimate their length: allow a small shortfall
    slack = 0 if fmt in ("WAV", "AIFF", "FLAC", "WAVEX") else int(0.01 * declared) + 4096
    if declared > 0 and samples.shape[0] < declared - slack:
        raise MediaError(path, f"truncated: header declares {declared} samples, file holds {samples.shape[0]}")
    return samples, rate


def _read_pyav(path: str | None, data: bytes | None = None) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(path if data is None else _NamedBytes(data, path))
    except Exception as e:
        raise MediaError(path, f"cannot open audio: {e}") from None
    with container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream in file")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise MediaError(path, "audio stream has a sample rate of 0 Hz")
        chunks = []
        try:
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                # planar formats come as (channels, n); packed as (1, n * channels)
                if not frame.format.is_planar:
                    a = a.reshape(-1, len(frame.layout.channels)).T
                chunks.append(_to_float(a, path).T)
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(path, f"corrupt audio data: {e}") from None
    if not chunks:
        raise MediaError(path, "no audio samples (empty)")
    return np.concatenate(chunks, axis=0), int(rate)


# the decoders load_audio tries, in order
AUDIO_BACKENDS = {"soundfile": _read_soundfile, "pyav": _read_pyav}


def read_audio_with(backend: str, path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file with one named backend only (samples (N, channels) float32, sample rate).

    For diagnostics (``mmretrieve doctor``); :func:`load_audio` is what indexing uses.
    """
    if backend not in AUDIO_BACKENDS:
        raise ValueError(f"backend must be one of {sorted(AUDIO_BACKENDS)}, got {backend!r}")
    return AUDIO_BACKENDS[backend](os.fspath(path))


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate`` (channels averaged).

    soundfile reads what libsndfile can (wav, flac, ogg, mp3, aiff, ...); PyAV reads the rest
    (m4a/aac, opus in other containers). Bad files raise MediaError(path, reason).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "file not found")
    if os.path.isdir(path):
        raise MediaError(path, "is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return _decode(path, None, sample_rate)


def load_audio_bytes(data: bytes, sample_rate: int, name: str | None = None) -> np.ndarray:
    """Decode an audio file held in memory (its bytes) exactly as :func:`load_audio` decodes the file.

    Both libraries read from a file object (soundfile first, then PyAV); ``name`` only labels errors
    (e.g. ``shard.tar#000123.flac``).
    """
    if not data:
        raise MediaError(name, "empty file (0 bytes)")
    return _decode(name, bytes(data), sample_rate)


def _decode(path: str | None, data: bytes | None, sample_rate: int) -> np.ndarray:
    """The decoding shared by load_audio (``data`` None: read ``path``) and load_audio_bytes."""
    _check_rate(sample_rate, None, "sample_rate")
    try:
        samples, rate = _read_soundfile(path, data)
    except MediaError:
        raise
    except Exception as sf_error:
        try:
            samples, rate = _read_pyav(path, data)
        except MediaError as e:
            raise MediaError(path, f"{e.reason} (soundfile: {sf_error})") from None
    return _mono_resampled(samples, rate, sample_rate, path)


def audio_from_array(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """In-memory samples ((N,) or (N, channels); float, or integer PCM) -> mono float32 at ``target_rate``."""
    return _mono_resampled(samples, sample_rate, target_rate, None)


def audio_windows(
    samples: np.ndarray, sample_rate: int, window: float | None = 10.0, *, min_tail: float = 1.0
) -> list[AudioClip]:
    """Cut mono samples into fixed windows (see fixed_windows); the last one ends at the last sample."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise MediaError(None, f"audio_windows expects mono 1-D samples, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MediaError(None, "no audio samples (empty)")
    sr = _check_rate(sample_rate, None, "sample_rate")
    n = arr.shape[0]
    clips = []
    for start, end in fixed_windows(n / sr, window, min_tail=min_tail):
        a = int(round(start * sr))
        b = n if end >= n / sr else int(round(end * sr))
        clips.append(AudioClip(start, end, arr[a:b], sr))
    return clips
