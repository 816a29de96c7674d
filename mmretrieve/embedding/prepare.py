"""Decoding and deterministic preprocessing: one source -> one preprocessed tensor per window.

This is the only place a file (or in-memory media, or a shard member's bytes) is decoded for
embedding. It runs in DataLoader worker processes, so a :class:`Preparer` holds only the encoder's
small CPU preprocessors and the :class:`~mmretrieve.embedding.sampling.Sampling`, never the model.

Training augmentation is an explicit option of the same route (:class:`Augment`): a seeded random
audio crop and a random video window with random frame times inside their slices. Indexing and
evaluation build their Preparer without it, so they never draw a random number.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import MediaError
from ..media.audio import audio_from_array, audio_windows, load_audio, load_audio_bytes
from ..media.image import as_rgb_array, load_image, load_image_bytes
from ..media.video import iter_video_clips, video_from_array
from ..modality import Modality
from ..query import AudioArray, VideoArray
from .sampling import AUDIO_MIN_TAIL, Sampling

__all__ = ["Source", "Prepared", "Augment", "Preparer", "file_hash", "source_of_sample"]


@dataclass(frozen=True)
class Source:
    """One thing to embed, with its explicit modality: a file (``path``), an in-memory value, or a
    ``member`` (an object with ``path``, ``ext`` and ``read_bytes()``, e.g. a tar-shard sample)."""

    modality: Modality
    path: str | None = None
    value: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    member: Any = None

    @property
    def name(self) -> str | None:
        """What errors call this source: the file, ``<shard>#<member>``, or None (in memory)."""
        return self.path if self.path is not None else getattr(self.member, "path", None)


@dataclass
class Prepared:
    """A source's preprocessed windows (one CPU tensor each) and their start/end seconds, or ``error``."""

    position: int
    tensors: list = field(default_factory=list)
    windows: list = field(default_factory=list)
    content_hash: str | None = None
    mtime: float | None = None
    size: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Augment:
    """Training-only randomness, seeded: every draw is a pure function of ``(seed, key)``.

    audio_crop: one window-long crop at a random start (whole recording when it is shorter).
    video_jitter: one random window, each frame time drawn inside its slice instead of its centre.
    """

    seed: int = 0
    audio_crop: bool = True
    video_jitter: bool = True

    def generator(self, *key: Any) -> np.random.Generator:
        digest = hashlib.sha256(":".join(map(str, (self.seed, *key))).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    """Content hash of a file (sha256), streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return "sha256:" + h.hexdigest()


def source_of_sample(sample: Any) -> Source:
    """A dataset sample (``mmretrieve.data.common.Sample``) as a Source; shard members are read from
    their bytes, named ``<shard>#<member>``."""
    if getattr(sample, "in_shard", False):
        return Source(sample.modality, member=sample)
    return Source(sample.modality, sample.path)


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


class Preparer:
    """Decode + preprocess sources into per-window tensors. ``augment`` is for training only."""

    def __init__(self, encoder: Any, sampling: Sampling, augment: Augment | None = None) -> None:
        if not isinstance(sampling, Sampling):
            raise TypeError(f"sampling: expected a Sampling, got {type(sampling).__name__}")
        # only the small, picklable CPU preprocessors travel to worker processes, never the model
        self.image = encoder.image_preprocessor
        self.audio = encoder.audio_frontend
        self.sample_rate = encoder.preset.audio.sample_rate
        self.sampling = sampling
        self.augment = augment

    # ---------------------------------------------------------------- batch side: errors are values
    def __call__(self, position: int, source: Source) -> Prepared:
        """Prepare without raising: a bad source comes back with ``error`` set (batch work goes on)."""
        out = Prepared(position)
        try:
            self._fill(source, out, ())
        except MediaError as e:
            out.error = e.reason
        except OSError as e:
            out.error = f"cannot read file: {e.strerror or e}"
        except Exception as e:  # a decoder bug on one file must not end the batch
            out.error = f"{type(e).__name__}: {e}"
        out.tensors = out.tensors if out.error is None else []
        return out

    # ---------------------------------------------------------------- single side: errors raise
    def prepare(self, source: Source, *, draw: tuple = ()) -> Prepared:
        """Prepare one source, raising MediaError (naming it) when it cannot be decoded.

        ``draw`` keys the augmentation's random draws (training passes ``(task, step, item)``); it
        must be given exactly when the Preparer has an ``augment``.
        """
        if (self.augment is None) != (not draw):
            raise ValueError("draw: pass a key exactly when the Preparer augments (training only)")
        out = Prepared(0)
        self._fill(source, out, draw)
        return out

    def _fill(self, source: Source, out: Prepared, draw: tuple) -> None:
        if source.path is not None:
            st = os.stat(source.path)
            out.mtime, out.size = st.st_mtime, st.st_size
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader; none of these is media
                raise MediaError(source.path, f"not a regular file ({_special_kind(st.st_mode)}); not read")
            if st.st_size == 0:
                raise MediaError(source.path, "empty file (0 bytes)")
            out.content_hash = file_hash(source.path)
        rng = self.augment.generator(*draw) if self.augment is not None and draw else None
        if source.modality is Modality.IMAGE:
            self._image(source, out)
        elif source.modality is Modality.VIDEO:
            self._video(source, out, rng if self.augment is not None and self.augment.video_jitter else None)
        elif source.modality is Modality.AUDIO:
            self._audio(source, out, rng if self.augment is not None and self.augment.audio_crop else None)
        else:
            raise MediaError(source.name, f"cannot prepare modality {source.modality.value!r} (text is tokenised)")
        if not out.tensors:
            raise MediaError(source.name, "nothing to embed (no frames or samples)")

    def _image(self, source: Source, out: Prepared) -> None:
        if source.member is not None:
            img = load_image_bytes(source.member.read_bytes(), source.name)
        elif source.path is not None:
            img = load_image(source.path)
        else:
            img = as_rgb_array(source.value)
        out.tensors.append(self.image(img))
        out.windows.append((None, None))

    def _video(self, source: Source, out: Prepared, rng: np.random.Generator | None) -> None:
        sampling = self.sampling.video
        if source.member is not None:
            clips = _member_video_clips(source.member, sampling, rng)
        elif source.path is not None:
            clips = iter_video_clips(source.path, sampling, augment=rng)  # one window's frames at a time
        elif isinstance(source.value, VideoArray):
            clips = video_from_array(np.asarray(source.value.frames), source.value.fps, sampling, augment=rng)
        else:
            raise MediaError(None, "an in-memory video must be a VideoArray(frames, fps)")
        for clip in clips:
            out.tensors.append(self.image.frames(clip.frames))
            out.windows.append((float(clip.start), float(clip.end)))

    def _audio(self, source: Source, out: Prepared, rng: np.random.Generator | None) -> None:
        rate = self.sample_rate
        if source.member is not None:
            samples = load_audio_bytes(source.member.read_bytes(), rate, source.name)
        elif source.path is not None:
            samples = load_audio(source.path, rate)
        elif isinstance(source.value, AudioArray):
            samples = audio_from_array(np.asarray(source.value.samples), source.value.sample_rate, rate)
        else:
            raise MediaError(None, "in-memory audio must be an AudioArray(samples, sample_rate)")
        window = self.sampling.audio_window
        if rng is not None and window is not None and len(samples) > int(round(window * rate)):
            n = int(round(window * rate))
            start = int(rng.integers(0, len(samples) - n + 1))
            out.tensors.append(self.audio(samples[start:start + n]))
            out.windows.append((start / rate, (start + n) / rate))
            return
        for clip in audio_windows(samples, rate, window, min_tail=AUDIO_MIN_TAIL):
            out.tensors.append(self.audio(clip.samples))
            out.windows.append((float(clip.start), float(clip.end)))


def _member_video_clips(member: Any, sampling, rng: np.random.Generator | None) -> list:
    """A video held in memory (a shard member): written to a temporary file named with the member's
    extension (some demuxers use it), decoded, and deleted at once. Errors name the member, never
    the temporary file."""
    data = member.read_bytes()
    name = member.path
    if not data:
        raise MediaError(name, "empty file (0 bytes)")
    ext = getattr(member, "ext", "")
    fd, tmp = tempfile.mkstemp(prefix="mmr-member-", suffix=f".{ext}" if ext else "")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return list(iter_video_clips(tmp, sampling, augment=rng))
        except MediaError as e:
            raise type(e)(name, e.reason.replace(tmp, name)) from None
    finally:
        os.unlink(tmp)
