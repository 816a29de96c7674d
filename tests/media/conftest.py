"""Fixtures for the media tests: small generated videos whose frames encode their own index."""
from __future__ import annotations

import numpy as np
import pytest

from mmretrieve.media.write import write_video

LEVEL_STEP = 6  # frame i is a flat grey of level i * LEVEL_STEP (+ a small marker), decodable after lossy coding


def level_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """n frames; frame i is a flat grey of i * LEVEL_STEP so its index can be read back."""
    assert n * LEVEL_STEP < 256
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = i * LEVEL_STEP
    return frames


def frame_index(frame: np.ndarray) -> int:
    """The index a decoded level frame stands for."""
    return int(round(float(frame.astype(np.float64).mean()) / LEVEL_STEP))


@pytest.fixture
def make_video(tmp_path):
    """make_video(name, n=30, fps=10, **write_video kwargs) -> path of a level-coded video in tmp_path."""

    def _make(name: str, n: int = 30, fps: float = 10.0, *, h: int = 48, w: int = 64, **kw) -> str:
        return write_video(tmp_path / name, level_frames(n, h, w), fps, **kw)

    return _make


@pytest.fixture
def level_codec():
    """The level coding used by make_video: .frames(n) builds frames, .index(frame) reads one back."""
    import types

    return types.SimpleNamespace(frames=level_frames, index=frame_index, step=LEVEL_STEP)
