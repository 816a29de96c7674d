"""Fixtures for the models tests: one tiny random encoder per session (read-only use)."""
from __future__ import annotations

import numpy as np
import pytest

from mmretrieve.models import create_encoder


@pytest.fixture(scope="session")
def tiny():
    """A shared tiny-random encoder on the CPU. Tests must not modify it."""
    return create_encoder("tiny-random", device="cpu")


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path_factory):
    """No test here may reach the network: an empty HF cache and the hub marked offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
