import numpy as np
import pytest

from mmretrieve.errors import MediaError
from mmretrieve.media import video as V
from mmretrieve.media.video import (
    VideoSampling,
    decode_all_frames,
    iter_video_clips,
    probe_video,
    sample_video,
    video_from_array,
)

LEVEL_STEP = 6  # must match tests/media/conftest.py


def frame_index(frame: np.ndarray) -> int:
    return int(round(float(frame.astype(np.float64).mean()) / LEVEL_STEP))


BACKENDS = ["pyav"] + (["decord"] if V.decord_available() else [])
needs_decord = pytest.mark.skipif(not V.decord_available(), reason="decord not installed")


def _indices(clip):
    return [frame_index(f) for f in clip.frames]


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".mkv", ".avi"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_containers_sample_the_frames_nearest_uniform_times(make_video, ext, backend):
    path = make_video(f"v{ext}", n=30, fps=10.0, gop=5)
    info = probe_video(path, backend)
    assert info.backend == backend
    assert (info.width, info.height, info.num_frames) == (64, 48, 30)
    assert info.duration == pytest.approx(3.0, abs=1e-3)
    assert info.fps == pytest.approx(10.0, rel=1e-3)
    clips = sample_video(path, VideoSampling(num_frames=6, window=None, backend=backend))
    assert len(clips) == 1
    c = clips[0]
    assert (c.start, c.end) == (0.0, pytest.approx(3.0, abs=1e-3))
    # centres of 6 slices of [0, 3): 0.25, 0.75, ... -> nearest frames (ties go to the earlier one)
    assert c.timestamps == pytest.approx((0.2, 0.7, 1.2, 1.7, 2.2, 2.7), abs=1e-6)
    assert c.frames.shape == (6, 48, 64, 3) and c.frames.dtype == np.uint8
    got = _indices(c)
    tol = 1 if ext == ".avi" else 0  # mpeg4 at default quality shifts flat greys slightly
    assert all(abs(g - e) <= tol for g, e in zip(got, [2, 7, 12, 17, 22, 27]))


def test_long_video_window_timestamps(make_video):
    path = make_video("long.mp4", n=25, fps=1.0, gop=4)  # 25 s
    clips = sample_video(path, VideoSampling(num_frames=4, window=10.0, backend="pyav"))
    assert [(c.start, c.end) for c in clips] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    for c in clips:
        assert all(c.start <= t < c.end for t in c.timestamps)
        assert list(c.timestamps) == sorted(c.timestamps)
        assert _indices(c) == [round(t) for t in c.timestamps]
    assert [len(c.timestamps) for c in clips] == [4, 4, 4]
    assert clips[2].timestamps == pytest.approx((21.0, 22.0, 23.0, 24.0))
    # iter_video_clips yields the same clips one window at a time
    again = list(iter_video_clips(path, VideoSampling(num_frames=4, window=10.0, backend="pyav")))
    assert [c.timestamps for c in again] == [c.timestamps for c in clips]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(again, clips))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shorter_than_window_gives_one_clip(make_video, backend):
    path = make_video("short.mp4", n=8, fps=8.0)
    clips = sample_video(path, VideoSampling(window=10.0, backend=backend))
    assert len(clips) == 1 and clips[0].start == 0.0 and clips[0].end == pytest.approx(1.0)
    # 12 targets over 8 frames: every frame once, no duplicates
    assert len(clips[0].timestamps) == 8 and len(set(clips[0].timestamps)) == 8
    assert _indices(clips[0]) == list(range(8))


def test_single_frame_video(make_video):
    path = make_video("one.mp4", n=1, fps=5.0)
    clips = sample_video(path, VideoSampling(backend="pyav"))
    assert len(clips) == 1 and clips[0].frames.shape == (1, 48, 64, 3) and clips[0].timestamps == (0.0,)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_uses_real_timestamps(make_video, ext, backend):
    pts = [0.0, 0.1, 0.2, 0.3, 1.0, 1.05, 1.1, 2.0, 2.5, 3.9]
    path = make_video(f"vfr{ext}", n=len(pts), fps=10.0, pts_seconds=pts)
    info = probe_video(path, backend)
    assert info.num_frames == 10
    assert info.duration == pytest.approx(4.0, abs=1e-3)  # last frame + the median frame step
    clips = sample_video(path, VideoSampling(num_frames=4, window=None, backend=backend))
    # targets 0.5, 1.5, 2.5, 3.5 -> nearest real frames 0.3, 1.1, 2.5, 3.9 (not frames 5, 15, 25, 35 of a CFR guess)
    assert clips[0].timestamps == pytest.approx((0.3, 1.1, 2.5, 3.9), abs=1e-6)
    assert _indices(clips[0]) == [3, 6, 8, 9]


def test_fps_sampling_and_max_frames(make_video):
    path = make_video("fps.mp4", n=40, fps=10.0)
    c = sample_video(path, VideoSampling(fps=2.0, window=None, backend="pyav"))[0]
    assert len(c.timestamps) == 8  # 4 s at 2 fps
    assert c.timestamps == pytest.approx((0.2, 0.7, 1.2, 1.7, 2.2, 2.7, 3.2, 3.7))
    capped = sample_video(path, VideoSampling(fps=30.0, max_frames=5, window=None, backend="pyav"))[0]
    assert len(capped.timestamps) == 5
    tiny = sample_video(path, VideoSampling(fps=0.01, window=None, backend="pyav"))[0]
    assert len(tiny.timestamps) == 1  # at least one frame per window


def test_keyframe_snap_takes_keyframes_and_decodes_one_frame_per_target(make_video, monkeypatch):
    path = make_video("gop.mp4", n=40, fps=10.0, gop=10)
    with V._PyAVBackend().open(path) as r:
        key_times = set(np.round(r.times[r.keyframes], 6).tolist())
    assert {0.0, 1.0, 2.0, 3.0} <= key_times
    decoded = []
    real_next = V._PyAVReader._next_frame

    def counting(self):
        f = real_next(self)
        decoded.append(f)
        return f

    monkeypatch.setattr(V._PyAVReader, "_next_frame", counting)
    c = sample_video(path, VideoSampling(num_frames=4, window=None, keyframe_snap=True, backend="pyav"))[0]
    assert set(c.timestamps) <= key_times
    assert _indices(c) == [round(t * 10) for t in c.timestamps]
    assert len(decoded) == len(c.timestamps)  # seek to the keyframe, take the first decoded frame
    decoded.clear()
    exact = sample_video(path, VideoSampling(num_frames=4, window=None, backend="pyav"))[0]
    assert exact.timestamps == pytest.approx((0.5, 1.5, 2.5, 3.5))
    assert len(decoded) < 40  # seeks per target, never decodes the whole clip


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyframe_snap_both_backends(make_video, backend):
    path = make_video("gop2.mp4", n=40, fps=10.0, gop=10)
    c = sample_video(path, VideoSampling(num_frames=4, window=None, keyframe_snap=True, backend=backend))[0]
    assert all(abs(t - round(t)) < 1e-6 for t in c.timestamps)  # keyframes sit on whole seconds here
    assert _indices(c) == [round(t * 10) for t in c.timestamps]


@needs_decord
@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_decord_and_pyav_choose_the_same_frames(make_video, ext):
    path = make_video(f"cfr{ext}", n=40, fps=10.0, gop=8)
    s = dict(num_frames=5, window=2.0)
    a = sample_video(path, VideoSampling(backend="decord", **s))
    b = sample_video(path, VideoSampling(backend="pyav", **s))
    assert [(c.start, c.end) for c in a] == [(c.start, c.end) for c in b]
    for ca, cb in zip(a, b):
        assert ca.timestamps == cb.timestamps
        assert _indices(ca) == _indices(cb)
        assert np.abs(ca.frames.astype(int) - cb.frames.astype(int)).mean() < 2


def test_auto_falls_back_to_pyav_when_decord_fails(make_video, monkeypatch):
    path = make_video("fb.mp4", n=20, fps=10.0)

    def broken(self, path, **kw):
        raise RuntimeError("simulated decord crash")

    monkeypatch.setattr(V, "decord_available", lambda: True)
    monkeypatch.setattr(V._DecordBackend, "open", broken)
    monkeypatch.setattr(V._DecordBackend, "decode_all", broken)
    assert probe_video(path).backend == "pyav"
    clips = sample_video(path, VideoSampling(num_frames=4, window=None))
    assert _indices(clips[0]) == [2, 7, 12, 17]
    assert len(list(iter_video_clips(path, VideoSampling(num_frames=4)))) == 1
    assert decode_all_frames(path) == 20
    with pytest.raises(MediaError, match="simulated decord crash"):
        sample_video(path, VideoSampling(backend="decord"))


def test_pyav_used_when_decord_missing(make_video, monkeypatch):
    path = make_video("nodecord.mp4", n=10, fps=10.0)
    monkeypatch.setattr(V, "decord_available", lambda: False)
    assert probe_video(path).backend == "pyav"
    with pytest.raises(MediaError, match="decord is not installed"):
        probe_video(path, "decord")


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_all_frames_counts(make_video, backend):
    path = make_video("all.mkv", n=25, fps=10.0)
    assert decode_all_frames(path, backend) == 25


@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
def test_deterministic(make_video, backend):
    path = make_video("det.webm", n=30, fps=10.0, gop=7)
    s = VideoSampling(num_frames=5, window=1.5, backend=backend)
    a, b = sample_video(path, s), sample_video(path, s)
    assert len(a) == len(b) == 2
    for ca, cb in zip(a, b):
        assert ca.timestamps == cb.timestamps and np.array_equal(ca.frames, cb.frames)


def test_video_from_array_matches_file_sampling(make_video, level_codec):
    assert level_codec.step == LEVEL_STEP
    frames = level_codec.frames(30)
    path = make_video("arr.mp4", n=30, fps=10.0)
    s = VideoSampling(num_frames=4, window=2.0)
    from_array = video_from_array(frames, 10.0, s)
    from_file = sample_video(path, VideoSampling(num_frames=4, window=2.0, backend="pyav"))
    assert [(c.start, c.end, c.timestamps) for c in from_array] == [(c.start, c.end, c.timestamps) for c in from_file]
    for c in from_array:
        assert _indices(c) == [round(t * 10) for t in c.timestamps]


@pytest.mark.parametrize(
    "frames,fps,match",
    [
        (np.zeros((0, 4, 4, 3), np.uint8), 10.0, "zero frames"),
        (np.zeros((4, 4, 3), np.uint8), 10.0, "shape"),
        (np.zeros((2, 4, 4, 3), np.float32), 10.0, "uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), 0.0, "fps"),
    ],
)
def test_video_from_array_rejects(frames, fps, match):
    with pytest.raises(MediaError, match=match):
        video_from_array(frames, fps)


def test_bad_files(tmp_path, make_video):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n" * 100)
    good = make_video("good.mp4", n=30, fps=10.0)
    data = open(good, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    for bad, why in [(empty, "empty"), (text, None), (cut, None), (garbage, None), (tmp_path / "missing.avi", "not found")]:
        for backend in ["auto", "pyav"]:
            with pytest.raises(MediaError) as info:
                sample_video(bad, VideoSampling(backend=backend))
            assert info.value.path == str(bad)
            if why:
                assert why in info.value.reason
            with pytest.raises(MediaError):
                probe_video(bad, backend)


def test_audio_only_file_has_no_video_stream(tmp_path):
    from mmretrieve.media.write import write_audio

    p = write_audio(tmp_path / "sound.ogg", np.zeros(8000, np.float32), 8000)
    with pytest.raises(MediaError, match="no video stream"):
        sample_video(p, VideoSampling(backend="pyav"))


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="num_frames"):
        VideoSampling(num_frames=0)
    with pytest.raises(ValueError, match="backend"):
        VideoSampling(backend="ffmpeg")
    with pytest.raises(ValueError, match="window"):
        VideoSampling(window=0)
    with pytest.raises(ValueError, match="fps"):
        VideoSampling(fps=-1.0)


@pytest.mark.parametrize("ext", [".mkv", ".webm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lying_duration_trusts_decoded_timestamps(make_video, tmp_path, ext, backend):
    import av

    path = make_video(f"full{ext}", n=40, fps=10.0, gop=10)
    data = open(path, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # header still claims 4 s
    with av.open(str(cut)) as c:
        assert c.duration / 1e6 == pytest.approx(4.0, abs=0.05)
    info = probe_video(cut, backend)
    assert 0.5 < info.duration < 3.9 and info.num_frames < 40
    clips = sample_video(cut, VideoSampling(num_frames=4, window=None, backend=backend))
    assert clips[0].end == pytest.approx(info.duration)
    assert all(t < info.duration for t in clips[0].timestamps)
    assert _indices(clips[0]) == [round(t * 10) for t in clips[0].timestamps]


def test_truncated_avi_is_an_error(make_video, tmp_path):
    path = make_video("full.avi", n=40, fps=10.0, gop=10)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(MediaError) as info:
        sample_video(cut, VideoSampling(num_frames=4, window=None))
    assert info.value.path == str(cut)
