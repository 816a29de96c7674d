"""The one sampling config: which frames and which audio windows a file becomes, for every caller.

It comes out of the preset (``Sampling.from_preset``), is changed only through ``Sampling.override``
(the ``index``/``eval`` flags, ``Retriever.create(video=..., audio_window=...)``, a training config's
``data.num_frames`` / ``data.sampling``), and is recorded as it is in the index fingerprint and in
training checkpoints (``Sampling.record`` / ``Sampling.from_record``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..media.video import VideoSampling

__all__ = ["Sampling", "AUDIO_MIN_TAIL", "OVERRIDABLE"]

AUDIO_MIN_TAIL = 0.2
"""An audio tail shorter than this (seconds) joins the previous window, so every window still fits the
audio tower's input; longer tails are windows of their own (a 25 s recording in 10 s windows: 3)."""

_UNSET: Any = object()

OVERRIDABLE = ("num_frames", "fps", "window", "max_frames", "min_tail", "keyframe_snap", "backend", "audio_window")
"""The names ``Sampling.override`` (and a training config's ``data.sampling``) accept."""


@dataclass(frozen=True)
class Sampling:
    """Video frame sampling per window, and the audio window (seconds; None = a recording is one window)."""

    video: VideoSampling = VideoSampling()
    audio_window: float | None = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.video, VideoSampling):
            raise TypeError(f"video: expected a VideoSampling, got {type(self.video).__name__}")
        w = self.audio_window
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0):
            raise ValueError(f"audio_window must be None or a finite number of seconds > 0, got {w!r}")

    @classmethod
    def from_preset(cls, preset: Any) -> "Sampling":
        """The sampling a preset asks for (``preset.video`` sampling fields, ``preset.audio.window``)."""
        v = preset.video
        video = VideoSampling(num_frames=v.num_frames, fps=v.fps, window=v.window, min_tail=v.min_tail,
                              max_frames=v.max_frames, keyframe_snap=v.keyframe_snap, backend=v.backend)
        return cls(video, preset.audio.window)

    def override(self, *, video: VideoSampling | None = None, num_frames: int | None = None,
                 fps: float | None = _UNSET, window: float | None = _UNSET, max_frames: int | None = None,
                 min_tail: float | None = None, keyframe_snap: bool | None = None, backend: str | None = None,
                 audio_window: float | None = _UNSET) -> "Sampling":
        """A copy with the given settings changed; the only place sampling is overridden.

        ``video`` replaces the whole video sampling first; ``num_frames``, ``max_frames``, ``min_tail``,
        ``keyframe_snap`` and ``backend`` apply when not None; ``fps``, ``window`` and ``audio_window``
        apply when given (None is a value: no fps / one window per file). A ``num_frames`` above
        ``max_frames`` raises ``max_frames`` with it, so the frames asked for are the frames sampled.
        """
        v = video if video is not None else self.video
        changes: dict[str, Any] = {}
        for name, value in (("num_frames", num_frames), ("max_frames", max_frames), ("min_tail", min_tail),
                            ("keyframe_snap", keyframe_snap), ("backend", backend)):
            if value is not None:
                changes[name] = value
        if fps is not _UNSET:
            changes["fps"] = fps
        if window is not _UNSET:
            changes["window"] = window
        if "num_frames" in changes and "max_frames" not in changes:
            changes["max_frames"] = max(v.max_frames, int(changes["num_frames"]))
        if changes:
            v = dataclasses.replace(v, **changes)
        return Sampling(v, self.audio_window if audio_window is _UNSET else audio_window)

    def override_from(self, changes: Mapping[str, Any], where: str = "sampling") -> "Sampling":
        """``override`` from a mapping of :data:`OVERRIDABLE` names (a config section, parsed flags)."""
        unknown = sorted(set(changes) - set(OVERRIDABLE))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; expected some of {list(OVERRIDABLE)}")
        return self.override(**dict(changes))

    def record(self) -> dict:
        """The JSON form stored in index fingerprints and checkpoints (the index format of every release)."""
        return {"video_sampling": dataclasses.asdict(self.video), "audio_window": self.audio_window}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Sampling":
        """Read :meth:`record`'s form back; KeyError / TypeError / ValueError for a malformed record."""
        return cls(VideoSampling(**record["video_sampling"]), record["audio_window"])
