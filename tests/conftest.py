"""Shared fixtures: a generated media folder (images, videos, audio, corrupt files) and tiny retrievers."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

# In CI the property tests replay a fixed set of examples (reproducible, no flakes); run them locally
# (or with --hypothesis-seed=N) to explore new ones.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
if _CI:
    settings.load_profile("ci")

from mmretrieve.media.write import write_audio, write_image, write_video
from netguard import GUARD

TINY = "tiny-random"


def pytest_configure(config):
    # In CI nothing may reach beyond this machine: the socket guard wraps the whole session, and
    # every test checks at its end that no attempt was made (see no_network below).
    if _CI:
        GUARD.install()


@pytest.fixture(autouse=_CI)
def no_network():
    """Fail the test on any attempt to reach a non-loopback address (netguard.py); loopback is allowed."""
    installed_here = not GUARD.installed
    GUARD.install()
    GUARD.reset()
    try:
        yield GUARD
        assert not GUARD.attempts, f"the test tried to reach the network: {list(zip(GUARD.attempts, GUARD.origins))}"
    finally:
        GUARD.reset()
        if installed_here and not _CI:
            GUARD.uninstall()


def _noise_image(rng, size=48):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _moving_video(rng, n, size=32):
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    frames = np.zeros((n, size, size, 3), np.uint8) + rng.integers(0, 80, 3, dtype=np.uint8)
    for i in range(n):
        x = (i * 3) % (size - 8)
        frames[i, 8:16, x : x + 8] = colour
    return frames


def _tone(rng, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    f = float(rng.uniform(150, 2000))
    return (0.4 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def make_media_folder(root, *, corrupt: bool = True, seed: int = 0) -> dict:
    """A small folder of every modality (with a long video and a long recording) and, optionally, bad files."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "photos", "nested"), exist_ok=True)
    os.makedirs(os.path.join(root, "clips"), exist_ok=True)
    os.makedirs(os.path.join(root, "sounds"), exist_ok=True)
    files = {"image": [], "video": [], "audio": [], "bad": []}
    for i, ext in enumerate([".jpg", ".png", ".webp", ".jpg"]):
        sub = "photos/nested" if i == 3 else "photos"
        files["image"].append(write_image(os.path.join(root, sub, f"img{i}{ext}"), _noise_image(rng)))
    files["video"].append(write_video(os.path.join(root, "clips", "short.mp4"), _moving_video(rng, 8), 8))
    files["video"].append(write_video(os.path.join(root, "clips", "short.webm"), _moving_video(rng, 8), 8))
    files["video"].append(write_video(os.path.join(root, "clips", "long.mp4"), _moving_video(rng, 50), 2))  # 25 s
    files["audio"].append(write_audio(os.path.join(root, "sounds", "beep.wav"), _tone(rng, 1.0), 16000))
    files["audio"].append(write_audio(os.path.join(root, "sounds", "beep.flac"), _tone(rng, 1.5, 22050), 22050))
    files["audio"].append(write_audio(os.path.join(root, "sounds", "long.wav"), _tone(rng, 25.0), 16000))  # 25 s
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not media; ignored by extension")
    if corrupt:
        bad = os.path.join(root, "bad")
        os.makedirs(bad, exist_ok=True)
        with open(files["image"][0], "rb") as f:
            data = f.read()
        with open(os.path.join(bad, "truncated.jpg"), "wb") as f:
            f.write(data[: len(data) // 3])
        open(os.path.join(bad, "empty.mp4"), "wb").close()
        with open(os.path.join(bad, "text.wav"), "w") as f:
            f.write("this is not a wav file")
        files["bad"] = [os.path.join(bad, n) for n in ("truncated.jpg", "empty.mp4", "text.wav")]
    for key in files:
        files[key] = [os.path.realpath(p) for p in files[key]]
    return files


@pytest.fixture(scope="session")
def media_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = make_media_folder(str(root))
    return str(root), files


@pytest.fixture(scope="session")
def media_factory():
    """make_media_folder(root, corrupt=True, seed=0) -> {"image": [...], "video": [...], "audio": [...], "bad": [...]}"""
    return make_media_folder


@pytest.fixture
def tiny_retriever():
    import mmretrieve as mmr

    r = mmr.Retriever.create(TINY, num_workers=0)
    yield r
    r.close()
