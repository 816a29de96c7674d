"""Fixtures for the demo tests: a small generated index (tiny-random) saved on disk, and a corrupt upload."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from mmretrieve.data.synthetic import make_corpus
from mmretrieve.media.write import write_audio, write_video


@dataclass(frozen=True)
class DemoFixture:
    root: str            # media folder
    index: str           # saved index directory
    images: tuple[str, ...]
    videos: tuple[str, ...]
    sounds: tuple[str, ...]
    long_video: str      # 12 s -> windows (0, 10), (10, 12)
    long_sound: str      # 12 s -> windows (0, 10), (10, 12)
    stray: str           # a file in the media folder that is NOT indexed


def _long_video(path: str) -> str:
    frames = np.full((48, 32, 32, 3), 40, np.uint8)  # 12 s at 4 fps
    for i in range(len(frames)):
        x = (i * 2) % 24
        frames[i, 12:20, x : x + 8] = (220, 30, 30)
    return write_video(path, frames, 4)


def _long_sound(path: str, rate: int = 16000) -> str:
    t = np.arange(12 * rate) / rate
    return write_audio(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory) -> DemoFixture:
    import mmretrieve as mmr

    root = tmp_path_factory.mktemp("demo_media")
    corpus = make_corpus(root / "corpus", n_images=6, n_videos=2, n_audio=2, seed=3, video_seconds=1.0, audio_seconds=1.0)
    long_video = _long_video(str(root / "corpus" / "videos" / "long clip.mp4"))  # a space in the name on purpose
    long_sound = _long_sound(str(root / "corpus" / "audio" / "long.wav"))
    stray = corpus.write_manifest()  # manifest.jsonl lives beside the media but is not media
    index = str(root / "index.mmr")
    r = mmr.Retriever.create("tiny-random", path=index, num_workers=0)
    report = r.add(corpus.root, progress=False)
    assert not report.failed, report
    r.save()
    r.close()
    real = os.path.realpath
    return DemoFixture(
        root=real(corpus.root),
        index=index,
        images=tuple(real(it.path) for it in corpus.of("image")),
        videos=tuple(real(it.path) for it in corpus.of("video")),
        sounds=tuple(real(it.path) for it in corpus.of("audio")),
        long_video=real(long_video),
        long_sound=real(long_sound),
        stray=real(stray),
    )


@pytest.fixture(scope="session")
def demo_retriever(demo_index):
    import mmretrieve as mmr

    r = mmr.Retriever.load(demo_index.index, readonly=True, num_workers=0)
    yield r
    r.close()


@pytest.fixture
def corrupt_png(tmp_path) -> str:
    path = tmp_path / "broken.png"
    path.write_text("this is not a PNG image")
    return str(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
