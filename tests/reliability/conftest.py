"""Fixtures and helpers for the reliability tests: CLI subprocesses, small generated folders."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mmretrieve.media.write import write_audio, write_image

TINY = "tiny-random"


def cli(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m mmretrieve ARGS`` to completion; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "mmretrieve", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def cli_popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmretrieve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def make_image_folder(root: str, n: int, *, seed: int = 0, size: int = 16) -> list[str]:
    """n tiny PNGs of random noise (distinct contents) in root; returns their real paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = []
    for i in range(n):
        out.append(os.path.realpath(write_image(os.path.join(root, f"img{i:04d}.png"),
                                                rng.integers(0, 256, (size, size, 3), dtype=np.uint8))))
    return out


def make_audio_folder(root: str, n: int, *, seconds: float = 25.0, seed: int = 0) -> list[str]:
    """n noisy tones of ``seconds`` (3 windows of 10 s at the tiny preset) in root."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * 16000)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        out.append(os.path.realpath(write_audio(os.path.join(root, f"tone{i:03d}.wav"), tone, 16000)))
    return out


@pytest.fixture(scope="session")
def image_folder_300(tmp_path_factory) -> tuple[str, list[str]]:
    root = str(tmp_path_factory.mktemp("imgs300"))
    return root, make_image_folder(root, 300)
