"""Video frame sampling by time, behind a small backend interface (decord, PyAV).

Frames are chosen by *time*: uniform target times inside each window are mapped to the frame
whose (decoded) timestamp is nearest, so variable-frame-rate files sample correctly. Only the
chosen frames are converted to RGB, and only one window's frames are held at a time while
decoding, so long videos stay memory-bounded.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import MediaError
from .windows import fixed_windows, uniform_times

__all__ = [
    "VideoInfo",
    "VideoSampling",
    "VideoClip",
    "probe_video",
    "sample_video",
    "iter_video_clips",
    "video_from_array",
    "decode_all_frames",
    "decord_available",
    "BACKENDS",
]

BACKENDS = ("auto", "decord", "pyav")


@dataclass(frozen=True)
class VideoInfo:
    """What a backend found in a file. ``duration`` and ``num_frames`` come from the frame
    timestamps actually present in the stream where they disagree with the container header."""

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    backend: str


@dataclass(frozen=True)
class VideoSampling:
    """How frames are taken from a video: per window, ``num_frames`` uniform frames, or ``fps``
    frames per second (at least 1, at most ``max_frames``; ``max_frames`` also caps ``num_frames``)."""

    num_frames: int = 12
    fps: float | None = None
    window: float | None = 10.0
    min_tail: float = 1.0
    max_frames: int = 64
    keyframe_snap: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(f"num_frames must be an integer >= 1, got {self.num_frames!r}")
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"max_frames must be an integer >= 1, got {self.max_frames!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be None or a finite number > 0, got {self.fps!r}")
        if self.window is not None and not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"window must be None or a finite number of seconds > 0, got {self.window!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def frames_for(self, start: float, end: float) -> int:
        """How many target times a window [start, end) gets."""
        if self.fps is not None:
            n = int(round((end - start) * self.fps))
        else:
            n = self.num_frames
        return max(1, min(n, self.max_frames))


@dataclass(frozen=True)
class VideoClip:
    """One window of a video: frames (T, H, W, 3) uint8 and each frame's timestamp in seconds."""

    start: float
    end: float
    frames: np.ndarray
    timestamps: tuple[float, ...]


# --------------------------------------------------------------------------- frame choice (shared)


def nearest_indices(frame_times: np.ndarray, targets: Sequence[float]) -> list[int]:
    """Index of the frame whose timestamp is nearest each target (ties -> earlier frame)."""
    t = np.asarray(frame_times, dtype=np.float64)
    q = np.asarray(targets, dtype=np.float64)
    right = np.clip(np.searchsorted(t, q, side="left"), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    pick_left = np.abs(q - t[left]) <= np.abs(t[right] - q)
    return [int(i) for i in np.where(pick_left, left, right)]


def _choose(frame_times: np.ndarray, keyframes: np.ndarray, targets: Sequence[float], snap: bool) -> list[int]:
    """Sorted unique frame indices for the targets; with ``snap`` only keyframes are eligible."""
    if snap and len(keyframes):
        ks = np.asarray(keyframes, dtype=np.int64)
        idx = [int(ks[i]) for i in nearest_indices(frame_times[ks], targets)]
    else:
        idx = nearest_indices(frame_times, targets)
    return sorted(set(idx))


def _duration_from_times(times: np.ndarray, fps: float) -> float:
    """Duration implied by frame timestamps: last frame start plus one frame length."""
    if len(times) >= 2:
        step = float(np.median(np.diff(times)))
        step = step if step > 0 else (1.0 / fps if fps > 0 else 0.0)
    else:
        step = 1.0 / fps if fps > 0 else 0.0
    return float(times[-1] + step) if step > 0 else float(times[-1]) or 1e-3


def _declared_frames(path: str) -> int:
    """The frame count the container's header declares (0 when it declares none or can't be read)."""
    try:
        import av

        with av.open(path) as container:
            return int(container.streams.video[0].frames or 0) if container.streams.video else 0
    except Exception:
        return 0


def _check_frame_count(path: str, declared: int, found: int) -> None:
    """A file holding under half the frames its header declares lost its tail (a cut AVI loses its
    index, and the demuxer then pairs timestamps with the wrong frames): refuse it."""
    if declared > 0 and found * 2 < declared and declared - found >= 2:
        raise MediaError(path, f"truncated or damaged: the header declares {declared} frames, "
                               f"the file holds {found}")


# --------------------------------------------------------------------------- backends


class _Reader:
    """An open video: frame timestamps (seconds from the first frame), keyframe indices, info,
    and ``read(indices)`` returning RGB frames for sorted frame indices."""

    info: VideoInfo
    times: np.ndarray
    keyframes: np.ndarray

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, list[float]]:  # pragma: no cover
        """RGB frames (T, H, W, 3) uint8 for sorted frame indices, and their actual timestamps."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Backend:
    """Small interface every backend implements; ``open`` does the real work."""

    name = "?"

    def open(self, path: str, *, keyframe_snap: bool = False) -> _Reader:  # pragma: no cover - interface
        raise NotImplementedError

    def probe(self, path: str) -> VideoInfo:
        with self.open(path) as r:
            return r.info

    def read(self, path: str, times: Sequence[float], keyframe_snap: bool = False) -> tuple[np.ndarray, list[float]]:
        """Frames nearest the given times (seconds from the first frame) and their timestamps."""
        with self.open(path, keyframe_snap=keyframe_snap) as r:
            return r.read(_choose(r.times, r.keyframes, times, keyframe_snap))

    def decode_all(self, path: str) -> int:  # pragma: no cover - interface
        raise NotImplementedError


# ---- PyAV


class _PyAVReader(_Reader):
    def __init__(self, path: str, *, frame_threads: bool = True):
        import av

        self.path = path
        self.frame_threads = frame_threads
        try:
            self.container = av.open(path)
        except Exception as e:  # av.error.* (InvalidDataError, ...), OSError
            raise MediaError(path, f"cannot open video: {e}") from None
        try:
            self._scan()
        except BaseException:
            self.container.close()
            raise

    def _scan(self) -> None:
        """Demux every packet (no decoding) to learn frame timestamps and keyframes."""
        path = self.path
        if not self.container.streams.video:
            raise MediaError(path, "no video stream in file")
        stream = self.container.streams.video[0]
        self.stream = stream
        # Frame threading speeds up decoding runs (exact sampling decodes from the keyframe on);
        # keyframe snapping decodes one frame per seek, where frame threads only add latency.
        stream.thread_type = "AUTO" if self.frame_threads else "SLICE"
        tb = stream.time_base
        if tb is None:
            raise MediaError(path, "video stream has no time base")
        pts, keys = [], []
        try:
            for pkt in self.container.demux(stream):
                if pkt.size == 0 or getattr(pkt, "is_discard", False):
                    continue
                p = pkt.pts if pkt.pts is not None else pkt.dts
                pts.append(p)
                keys.append(bool(pkt.is_keyframe))
        except Exception as e:
            if not pts:
                raise MediaError(path, f"cannot read video packets: {e}") from None
            # a damaged tail: keep the packets read so far
        if not pts:
            raise MediaError(path, "video stream has zero frames")
        _check_frame_count(path, int(stream.frames or 0), len(pts))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if any(p is None for p in pts):
            if fps <= 0:
                raise MediaError(path, "frames have no timestamps and the frame rate is unknown")
            step = 1.0 / (fps * float(tb))
            pts = [int(round(i * step)) for i in range(len(pts))]
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        self.pts = np.asarray(pts, dtype=np.int64)[order]
        key_sorted = np.asarray(keys, dtype=bool)[order]
        self.pts0 = int(self.pts[0])
        self.tb = float(tb)
        self.times = np.round((self.pts - self.pts0).astype(np.float64) * self.tb, 6)
        self.keyframes = np.flatnonzero(key_sorted)
        if len(self.keyframes) == 0 or self.keyframes[0] != 0:
            self.keyframes = np.concatenate([[0], self.keyframes]).astype(np.int64)
        cc = stream.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if fps <= 0 and len(self.times) >= 2:
            fps = 1.0 / max(float(np.median(np.diff(self.times))), 1e-6)
        self.info = VideoInfo(path, _duration_from_times(self.times, fps), fps, len(self.times), w, h, "pyav")
        self.pos = None  # pts of the last decoded frame, None = decoder must seek first
        self._frames = None

    def _decoder(self):
        if self._frames is None:
            self._frames = self.container.decode(self.stream)
        return self._frames

    def _seek(self, key_pts: int) -> None:
        self.container.seek(int(key_pts), stream=self.stream, backward=True, any_frame=False)
        self._frames = None
        self.pos = None

    def _next_frame(self):
        try:
            return next(self._decoder())
        except StopIteration:
            return None
        except Exception as e:
            raise MediaError(self.path, f"corrupt video data: {e}") from None

    def _frame_pts(self, frame) -> int | None:
        p = frame.pts if frame.pts is not None else getattr(frame, "dts", None)
        return p

    def _decode_until(self, target: int):
        """Decode forward to the frame with pts ``target`` (or the first one past it)."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            p = self._frame_pts(frame)
            if p is None:
                continue
            self.pos = p
            if p >= target:
                return frame

    def _key_before(self, i: int) -> int:
        k = np.searchsorted(self.keyframes, i, side="right") - 1
        return int(self.keyframes[max(k, 0)])

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, list[float]]:
        out, times = [], []
        for i in indices:
            target = int(self.pts[i])
            k = int(np.searchsorted(self.keyframes, i, side="right")) - 1
            key = int(self.keyframes[max(k, 0)])
            if self.pos is None or self.pos >= target or self.pos < int(self.pts[key]):
                # not positioned inside this keyframe's group, or already past the target: seek
                self._seek(int(self.pts[key]))
            frame = self._decode_until(target)
            if (frame is None or self._frame_pts(frame) != target) and k > 0:
                # the seek landed late (or the frame is missing): try once from the keyframe before
                self._seek(int(self.pts[int(self.keyframes[k - 1])]))
                frame = self._decode_until(target)
            if frame is None:
                raise MediaError(
                    self.path, f"frame at {self.times[i]:.3f}s could not be decoded (truncated or corrupt file)"
                )
            out.append(frame.to_ndarray(format="rgb24"))
            times.append(round((self._frame_pts(frame) - self.pts0) * self.tb, 6))
        if not out:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8), []
        return np.stack(out), times

    def close(self) -> None:
        self.container.close()


class _PyAVBackend(_Backend):
    name = "pyav"

    def open(self, path: str, *, keyframe_snap: bool = False) -> _Reader:
        return _PyAVReader(path, frame_threads=not keyframe_snap)

    def decode_all(self, path: str) -> int:
        with _PyAVReader(path) as r:
            r.container.seek(int(r.pts[0]), stream=r.stream, backward=True)
            n = 0
            try:
                for _ in r.container.decode(r.stream):
                    n += 1
            except Exception as e:
                raise MediaError(path, f"corrupt video data after {n} frames: {e}") from None
            return n


# ---- decord


def _import_decord():
    """Import decord, loading PyAV first.

    decord's wheel bundles its own FFmpeg libraries; when they are loaded before PyAV's, PyAV's
    libvpx encoder fails to open (EINVAL). Loading PyAV first keeps both working.
    """
    import av  # noqa: F401
    import decord

    return decord


@functools.lru_cache(maxsize=1)
def decord_available() -> bool:
    """True when decord can be imported (x86-64 Linux wheels only)."""
    try:
        _import_decord()
    except Exception:
        return False
    return True


class _DecordReader(_Reader):
    def __init__(self, path: str):
        decord = _import_decord()
        self.path = path
        try:
            self.vr = decord.VideoReader(path, ctx=decord.cpu(0))
        except Exception as e:
            raise MediaError(path, f"decord cannot open video: {e}") from None
        n = len(self.vr)
        if n == 0:
            raise MediaError(path, "video stream has zero frames")
        _check_frame_count(path, _declared_frames(path), n)
        ts = np.asarray(self.vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
        fps = float(self.vr.get_avg_fps() or 0.0)
        if np.any(ts < 0) and math.isfinite(fps) and fps > 0:
            # decord marks frames without a presentation time with a huge negative value (seen on
            # truncated MPEG-PS); subtracting it would claim a duration of millions of years
            ts = np.arange(n, dtype=np.float64) / fps
        if not np.all(np.isfinite(ts)) or np.any(ts < 0) or np.any(np.diff(ts) < 0):
            raise MediaError(path, "decord returned unusable frame timestamps")
        self.times = np.round(ts - ts[0], 6)
        keys = np.asarray(self.vr.get_key_indices(), dtype=np.int64)
        keys = keys[(keys >= 0) & (keys < n)]
        if len(keys) == 0 or keys[0] != 0:
            keys = np.concatenate([[0], keys]).astype(np.int64)
        self.keyframes = np.unique(keys)
        h, w = self._shape()
        self.info = VideoInfo(path, _duration_from_times(self.times, fps), fps, n, w, h, "decord")

    def _shape(self) -> tuple[int, int]:
        # decord exposes the frame size only through a decoded frame
        frame = self.vr[0].asnumpy()
        self.vr.seek(0)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise MediaError(self.path, f"decord returned a frame of shape {frame.shape}, expected (H, W, 3)")
        return int(frame.shape[0]), int(frame.shape[1])

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, list[float]]:
        if not len(indices):
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8), []
        try:
            frames = self.vr.get_batch(list(indices)).asnumpy()
        except Exception as e:
            raise MediaError(self.path, f"decord failed to decode frames: {e}") from None
        expected = (len(indices), self.info.height, self.info.width, 3)
        if frames.shape != expected:
            raise MediaError(self.path, f"decord returned frames of shape {frames.shape}, expected {expected}")
        return frames, [float(self.times[i]) for i in indices]

    def close(self) -> None:
        self.vr = None


class _DecordBackend(_Backend):
    name = "decord"

    def open(self, path: str, *, keyframe_snap: bool = False) -> _Reader:
        return _DecordReader(path)

    def decode_all(self, path: str) -> int:
        decord = _import_decord()
        try:
            vr = decord.VideoReader(path, ctx=decord.cpu(0))
            n = 0
            for start in range(0, len(vr), 32):
                n += vr.get_batch(list(range(start, min(start + 32, len(vr))))).shape[0]
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(path, f"decord failed to decode: {e}") from None
        return n


_PYAV = _PyAVBackend()
_DECORD = _DecordBackend()


def _candidates(backend: str) -> list[_Backend]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "pyav":
        return [_PYAV]
    if backend == "decord":
        if not decord_available():
            raise MediaError(None, "backend='decord' requested but decord is not installed; use 'pyav' or 'auto'")
        return [_DECORD]
    return [_DECORD, _PYAV] if decord_available() else [_PYAV]


def _check_path(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "file not found")
    if os.path.isdir(path):
        raise MediaError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return path


def _with_fallback(path: str, backend: str, work):
    """Run ``work(backend)`` with the first backend that succeeds ("auto": decord, then PyAV)."""
    errors = []
    for b in _candidates(backend):
        try:
            return work(b)
        except MediaError as e:
            errors.append((b.name, e.reason))
        except Exception as e:  # a backend bug or crash on an odd file must not end the batch
            errors.append((b.name, f"{type(e).__name__}: {e}"))
    if len(errors) == 1:
        raise MediaError(path, errors[0][1])
    raise MediaError(path, "; ".join(f"{name}: {reason}" for name, reason in errors))


# --------------------------------------------------------------------------- public API


def probe_video(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """Duration, fps, frame count and size of a video, using frame timestamps over header claims."""
    path = _check_path(path)
    return _with_fallback(path, backend, lambda b: b.probe(path))


# A window count above both of these means the timestamps are not believable (a 24 h video cut
# into 10 s windows has 8,640); refusing keeps a lying file from allocating millions of windows.
_MAX_WINDOWS = 100_000
_MAX_WINDOWS_PER_FRAME = 10


def _clips_from_reader(reader: _Reader, sampling: VideoSampling,
                       augment: np.random.Generator | None = None) -> Iterator[VideoClip]:
    duration = reader.info.duration
    if sampling.window is not None and math.isfinite(duration):
        n_windows = duration / sampling.window
        if n_windows > _MAX_WINDOWS and n_windows > _MAX_WINDOWS_PER_FRAME * max(1, reader.info.num_frames):
            raise MediaError(reader.info.path, f"frame timestamps span {duration:.4g} s for only "
                                               f"{reader.info.num_frames} frames (corrupt timestamps)")
    windows = fixed_windows(duration, sampling.window, min_tail=sampling.min_tail)
    if augment is not None:  # training only: one random window, each frame anywhere in its slice
        windows = [windows[int(augment.integers(len(windows)))]]
    for start, end in windows:
        n = sampling.frames_for(start, end)
        targets = uniform_times(start, end, n, None if augment is None else augment.random(n).tolist())
        idx = _choose(reader.times, reader.keyframes, targets, sampling.keyframe_snap)
        frames, times = reader.read(idx)
        yield VideoClip(start, end, frames, tuple(float(t) for t in times))


def iter_video_clips(path: str | os.PathLike, sampling: VideoSampling = VideoSampling(), *,
                     augment: np.random.Generator | None = None) -> Iterator[VideoClip]:
    """Like sample_video, but yields one window at a time so only that window's frames are in memory.

    With backend "auto" a decord failure on the first window falls back to PyAV for the file.
    ``augment`` (training only): a seeded generator drawing ONE random window and random frame
    times inside their slices; indexing and evaluation never pass it.
    """
    path = _check_path(path)
    errors = []
    for b in _candidates(sampling.backend):
        produced = 0
        try:
            with b.open(path, keyframe_snap=sampling.keyframe_snap) as reader:
                for clip in _clips_from_reader(reader, sampling, augment):
                    produced += 1
                    yield clip
            return
        except Exception as e:
            if produced:  # clips already handed out: can't switch backends mid-file
                raise e if isinstance(e, MediaError) else MediaError(path, f"{type(e).__name__}: {e}") from None
            errors.append((b.name, e.reason if isinstance(e, MediaError) else f"{type(e).__name__}: {e}"))
    if len(errors) == 1:
        raise MediaError(path, errors[0][1])
    raise MediaError(path, "; ".join(f"{name}: {reason}" for name, reason in errors))


def sample_video(path: str | os.PathLike, sampling: VideoSampling = VideoSampling()) -> list[VideoClip]:
    """One VideoClip per window (see fixed_windows); frames chosen by time, deterministic.

    Frame indices are de-duplicated, so a window shorter than ``num_frames`` frames gives fewer
    frames (T <= num_frames). Bad files raise MediaError(path, reason).
    """
    path = _check_path(path)

    def work(b: _Backend) -> list[VideoClip]:
        with b.open(path, keyframe_snap=sampling.keyframe_snap) as reader:
            return list(_clips_from_reader(reader, sampling))

    return _with_fallback(path, sampling.backend, work)


class _ArrayReader(_Reader):
    def __init__(self, frames: np.ndarray, fps: float):
        self.frames = frames
        self.times = np.arange(len(frames), dtype=np.float64) / fps
        self.keyframes = np.arange(len(frames), dtype=np.int64)
        t, h, w = frames.shape[:3]
        self.info = VideoInfo("<array>", t / fps, float(fps), t, w, h, "array")

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, list[float]]:
        return self.frames[list(indices)], [float(self.times[i]) for i in indices]


def video_from_array(frames: np.ndarray, fps: float, sampling: VideoSampling = VideoSampling(), *,
                     augment: np.random.Generator | None = None) -> list[VideoClip]:
    """Sample in-memory frames (T, H, W, 3) uint8 at ``fps`` exactly as sample_video samples a file
    (``augment`` as in :func:`iter_video_clips`)."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise MediaError(None, f"video array must have shape (T, H, W, 3), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise MediaError(None, "video array has zero frames")
    if arr.dtype != np.uint8:
        raise MediaError(None, f"video array must be uint8, got dtype {arr.dtype}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise MediaError(None, f"fps must be a finite number > 0, got {fps!r}")
    return list(_clips_from_reader(_ArrayReader(arr, float(fps)), sampling, augment))


def decode_all_frames(path: str | os.PathLike, backend: str = "auto") -> int:
    """Decode every frame of the file and return how many there were (the benchmark baseline).

    PyAV decodes without RGB conversion; decord always converts (its API has no other way).
    """
    path = _check_path(path)
    return _with_fallback(path, backend, lambda b: b.decode_all(path))
