"""The one sampling config: from the preset, overridden in one place, recorded in indexes and checkpoints."""
from __future__ import annotations

import dataclasses

import pytest

from mmretrieve.embedding import Sampling
from mmretrieve.media.video import VideoSampling
from mmretrieve.models import get_preset


def _preset(**video):
    base = get_preset("tiny-random")
    return dataclasses.replace(base, video=dataclasses.replace(base.video, **video),
                               audio=dataclasses.replace(base.audio, window=4.0))


def test_every_sampling_field_comes_from_the_preset():
    s = Sampling.from_preset(_preset(num_frames=5, fps=2.0, window=6.0, max_frames=20, min_tail=0.5,
                                     keyframe_snap=True, backend="pyav"))
    assert s.video == VideoSampling(num_frames=5, fps=2.0, window=6.0, min_tail=0.5, max_frames=20,
                                    keyframe_snap=True, backend="pyav")
    assert s.audio_window == 4.0


def test_override_changes_only_what_it_is_given():
    s = Sampling.from_preset(_preset(num_frames=4, fps=None, window=10.0, max_frames=16))
    assert s.override() == s
    t = s.override(num_frames=32, window=None, audio_window=None, backend="pyav", keyframe_snap=True)
    assert (t.video.num_frames, t.video.max_frames, t.video.window, t.audio_window) == (32, 32, None, None)
    assert (t.video.backend, t.video.keyframe_snap, t.video.fps) == ("pyav", True, None)
    assert s.override(fps=3.0).video.fps == 3.0 and s.override(fps=3.0).video.num_frames == 4
    whole = VideoSampling(num_frames=2, window=None)
    assert s.override(video=whole, num_frames=3).video == dataclasses.replace(whole, num_frames=3)
    assert s.override_from({"num_frames": 6, "audio_window": 2.5}) == s.override(num_frames=6, audio_window=2.5)
    with pytest.raises(ValueError, match=r"data.sampling: unknown setting\(s\) \['frame'\]"):
        s.override_from({"frame": 6}, "data.sampling")
    with pytest.raises(ValueError, match="audio_window"):
        s.override(audio_window=0)


def test_record_is_the_index_format_of_every_release_and_reads_back():
    s = Sampling.from_preset(_preset(keyframe_snap=True))
    rec = s.record()
    assert set(rec) == {"video_sampling", "audio_window"}
    assert rec["video_sampling"] == dataclasses.asdict(s.video)
    assert Sampling.from_record(rec) == s
    # a fingerprint written before the embedding module existed
    old = {"format": "mmretrieve-index", "audio_window": 10.0, "weights_path": None,
           "video_sampling": {"num_frames": 12, "fps": None, "window": 10.0, "min_tail": 1.0, "max_frames": 64,
                              "keyframe_snap": False, "backend": "auto"}}
    assert Sampling.from_record(old) == Sampling(VideoSampling(), 10.0)
    with pytest.raises(TypeError):
        Sampling.from_record({"video_sampling": {"evil": 1}, "audio_window": None})
