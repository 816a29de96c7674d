"""Fixtures for the training tests: tiny synthetic corpora generated once per session."""
from __future__ import annotations

import pytest

from mmretrieve.data.synthetic import make_corpus


def _corpus(root, **sizes):
    corpus = make_corpus(root, image_size=32, video_size=32, video_seconds=1.0, video_fps=8, audio_seconds=1.0, **sizes)
    corpus.write_manifest(ground_truth=True)
    return str(root)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """12 images, 8 videos, 8 sounds: enough for resume / DDP / command tests."""
    return _corpus(tmp_path_factory.mktemp("small-corpus"), n_images=12, n_videos=8, n_audio=8, seed=3)


@pytest.fixture(scope="session")
def learning_corpus(tmp_path_factory):
    """The corpus of the learning test (train part + held-out part)."""
    root = tmp_path_factory.mktemp("learning-corpus")
    corpus = make_corpus(root, n_images=96, n_videos=48, n_audio=48, seed=0, image_size=40, video_size=40,
                         video_seconds=1.0, video_fps=8, audio_seconds=2.0)
    corpus.write_manifest(ground_truth=True)
    return str(root)
