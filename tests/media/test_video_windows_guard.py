"""Lying timestamps must not turn into millions of windows (memory stays bounded)."""
from __future__ import annotations

import numpy as np
import pytest

from mmretrieve.errors import MediaError
from mmretrieve.media.video import VideoInfo, VideoSampling, _clips_from_reader, _Reader
from mmretrieve.media.windows import MAX_WINDOWS, fixed_windows


class _Lying(_Reader):
    def __init__(self, times):
        self.times = np.asarray(times, dtype=np.float64)
        self.keyframes = np.arange(len(times))
        self.info = VideoInfo("lying.mp4", float(self.times[-1]) + 0.1, 8.0, len(times), 8, 8, "test")

    def read(self, indices):
        return np.zeros((len(indices), 8, 8, 3), np.uint8), [float(self.times[i]) for i in indices]


def test_timestamps_spanning_ages_for_few_frames_are_refused():
    with pytest.raises(MediaError, match="corrupt timestamps") as e:
        next(_clips_from_reader(_Lying([0.0, 0.125, 1.0e14]), VideoSampling()))
    assert e.value.path == "lying.mp4"


def test_a_long_but_believable_video_is_windowed():
    times = np.arange(0, 3600, 2.0)  # one frame every 2 s for an hour: 360 windows of 10 s
    clips = list(_clips_from_reader(_Lying(times), VideoSampling(num_frames=2)))
    assert len(clips) == 360 and clips[-1].end == pytest.approx(3598.1)


def test_fixed_windows_refuses_an_unbounded_list(monkeypatch):
    assert MAX_WINDOWS >= 1_000_000
    with pytest.raises(ValueError, match="windows"):
        fixed_windows(1e14, 10.0)
    monkeypatch.setattr("mmretrieve.media.windows.MAX_WINDOWS", 1000)
    assert len(fixed_windows(10_000.0, 10.0)) == 1000
    with pytest.raises(ValueError, match="1,001 windows"):
        fixed_windows(10_005.0, 10.0)
