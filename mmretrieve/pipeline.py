"""Batch embedding: reader -> decode/preprocess (DataLoader workers) -> encode (main process) -> results.

Decoding and preprocessing run in worker processes while the model encodes the previous batch. A file
that fails to decode comes back as a :class:`Failure` with its path and reason; it never stops the batch.
Every window of a file is encoded before the file is yielded, so callers can write a file atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import MediaError
from .modality import Modality
from .query import AudioArray, VideoArray

__all__ = ["Source", "Embedded", "Failure", "embed_sources", "encode_texts", "encode_windows", "file_hash", "autocast_for", "default_workers"]


@dataclass(frozen=True)
class Source:
    """One thing to embed: a file (``path``) or an in-memory value, with its explicit modality."""

    modality: Modality
    path: str | None = None
    value: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Embedded:
    """A source's vectors, one row per window, with each window's start/end seconds."""

    source: Source
    vectors: np.ndarray  # (W, D) float32, L2-normalised
    windows: tuple[tuple[float | None, float | None], ...]
    content_hash: str | None
    mtime: float | None
    size: int | None


@dataclass(frozen=True)
class Failure:
    source: Source
    reason: str

    @property
    def path(self) -> str | None:
        return self.source.path


@dataclass
class _Prepared:
    position: int
    tensors: list = field(default_factory=list)  # one tensor per window
    windows: list = field(default_factory=list)
    content_hash: str | None = None
    mtime: float | None = None
    size: int | None = None
    error: str | None = None


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


def default_workers(n_items: int) -> int:
    """Worker processes for decoding: none for a handful of items, else up to 4, leaving a core to the model."""
    if n_items < 16:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 when supported, else fp16); a no-op on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class Preparer:
    """Decode and preprocess one source into per-window tensors (runs in DataLoader workers)."""

    # an audio window may exceed `window` by at most this tail, so it still fits the audio tower's input
    AUDIO_MIN_TAIL = 0.2

    def __init__(self, encoder, video_sampling, audio_window: float | None):
        # only the small, picklable CPU preprocessors travel to worker processes, never the model
        self.image = encoder.image_preprocessor
        self.audio = encoder.audio_frontend
        self.sample_rate = encoder.preset.audio.sample_rate
        self.video_sampling = video_sampling
        self.audio_window = audio_window

    def __call__(self, position: int, source: Source) -> _Prepared:
        out = _Prepared(position)
        try:
            if source.path is not None:
                st = os.stat(source.path)
                out.mtime, out.size = st.st_mtime, st.st_size
                if st.st_size == 0:
                    raise MediaError(source.path, "empty file (0 bytes)")
                out.content_hash = file_hash(source.path)
            getattr(self, "_" + source.modality.value)(source, out)
            if not out.tensors:
                raise MediaError(source.path, "nothing to embed (no frames or samples)")
        except MediaError as e:
            out.error = e.reason
        except OSError as e:
            out.error = f"cannot read file: {e.strerror or e}"
        except Exception as e:  # a decoder bug on one file must not end the batch
            out.error = f"{type(e).__name__}: {e}"
        return out

    def _image(self, source: Source, out: _Prepared) -> None:
        from .media.image import as_rgb_array, load_image

        img = load_image(source.path) if source.path is not None else as_rgb_array(source.value)
        out.tensors.append(self.image(img))
        out.windows.append((None, None))

    def _video(self, source: Source, out: _Prepared) -> None:
        from .media.video import iter_video_clips, video_from_array

        if source.path is not None:
            clips = iter_video_clips(source.path, self.video_sampling)  # one window's frames in memory at a time
        elif isinstance(source.value, VideoArray):
            clips = video_from_array(np.asarray(source.value.frames), source.value.fps, self.video_sampling)
        else:
            raise MediaError(None, "an in-memory video must be a VideoArray(frames, fps)")
        for clip in clips:
            out.tensors.append(self.image.frames(clip.frames))
            out.windows.append((float(clip.start), float(clip.end)))

    def _audio(self, source: Source, out: _Prepared) -> None:
        from .media.audio import audio_from_array, audio_windows, load_audio

        rate = self.sample_rate
        if source.path is not None:
            samples = load_audio(source.path, rate)
        elif isinstance(source.value, AudioArray):
            samples = audio_from_array(np.asarray(source.value.samples), source.value.sample_rate, rate)
        else:
            raise MediaError(None, "in-memory audio must be an AudioArray(samples, sample_rate)")
        for clip in audio_windows(samples, rate, self.audio_window, min_tail=self.AUDIO_MIN_TAIL):
            out.tensors.append(self.audio(clip.samples))
            out.windows.append((float(clip.start), float(clip.end)))


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, sources: Sequence[Source], preparer: Preparer):
        self.sources, self.preparer = sources, preparer

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> _Prepared:
        return self.preparer(i, self.sources[i])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x):
    return x


def embed_sources(
    encoder,
    sources: Sequence[Source],
    *,
    video_sampling,
    audio_window: float | None,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
    on_item: Callable[[], None] | None = None,
) -> Iterator[Embedded | Failure]:
    """Embed sources in batches; yields one Embedded or Failure per source (in completion order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    from tqdm.auto import tqdm

    texts = [s for s in sources if s.modality is Modality.TEXT]
    media = [s for s in sources if s.modality is not Modality.TEXT]
    bar = tqdm(total=len(sources), desc="embedding", unit="item", disable=not progress or len(sources) < 2)
    device = encoder.device
    try:
        with torch.inference_mode(), autocast_for(device):
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                vecs = encode_texts(encoder, [str(s.value) for s in chunk])
                for s, v in zip(chunk, vecs):
                    bar.update(1)
                    yield Embedded(s, v[None, :], ((None, None),), None, None, None)
            if not media:
                return
            workers = default_workers(len(media)) if num_workers is None else num_workers
            loader = torch.utils.data.DataLoader(
                _Dataset(media, Preparer(encoder, video_sampling, audio_window)),
                batch_size=None,
                shuffle=False,
                num_workers=workers,
                collate_fn=_identity,
                worker_init_fn=_worker_init if workers else None,
                prefetch_factor=4 if workers else None,
            )
            pending: dict[Modality, list[_Prepared]] = {m: [] for m in Modality}
            load: dict[Modality, int] = {m: 0 for m in Modality}
            limit = {Modality.IMAGE: batch_size, Modality.AUDIO: batch_size, Modality.VIDEO: batch_size * 8}
            for prep in loader:
                source = media[prep.position]
                if prep.error is not None:
                    bar.update(1)
                    yield Failure(source, prep.error)
                    continue
                m = source.modality
                pending[m].append(prep)
                load[m] += sum(t.shape[0] for t in prep.tensors) if m is Modality.VIDEO else len(prep.tensors)
                if load[m] >= limit[m]:
                    for item in _flush(encoder, m, pending[m], media, batch_size):
                        bar.update(1)
                        yield item
                    pending[m], load[m] = [], 0
            for m, preps in pending.items():
                if preps:
                    for item in _flush(encoder, m, preps, media, batch_size):
                        bar.update(1)
                        yield item
    finally:
        bar.close()


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().float()
    t = torch.nn.functional.normalize(t, dim=-1)  # re-normalise after a reduced-precision forward pass
    return t.cpu().numpy().astype(np.float32, copy=False)


def encode_texts(encoder, texts: Sequence[str]) -> np.ndarray:
    """Encode strings; returns (N, D) float32."""
    return _to_numpy(encoder.encode_text(list(texts)))


def encode_windows(encoder, modality: Modality, tensors: Sequence[torch.Tensor], batch_size: int) -> np.ndarray:
    """Encode preprocessed windows of one modality in chunks; returns (N, D) float32."""
    out = []
    for start in range(0, len(tensors), batch_size):
        chunk = tensors[start : start + batch_size]
        if modality is Modality.IMAGE:
            out.append(_to_numpy(encoder.encode_image(torch.stack(list(chunk)))))
        elif modality is Modality.AUDIO:
            out.append(_to_numpy(encoder.encode_audio(torch.stack(list(chunk)))))
        elif modality is Modality.VIDEO:
            from .models.preprocess import pad_frames

            out.append(_to_numpy(encoder.encode_video(*pad_frames(chunk))))
        else:
            raise ValueError(f"encode_windows: unsupported modality {modality}")
    return np.concatenate(out, axis=0) if out else np.zeros((0, encoder.dim), np.float32)


def _flush(encoder, modality: Modality, preps: list[_Prepared], media: Sequence[Source], batch_size: int) -> Iterable[Embedded]:
    tensors = [t for p in preps for t in p.tensors]
    video_batch = max(1, batch_size // 4)
    vecs = encode_windows(encoder, modality, tensors, video_batch if modality is Modality.VIDEO else batch_size)
    row = 0
    for p in preps:
        n = len(p.tensors)
        yield Embedded(media[p.position], vecs[row : row + n], tuple(p.windows), p.content_hash, p.mtime, p.size)
        row += n
