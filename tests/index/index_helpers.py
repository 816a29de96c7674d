"""Helpers for the index tests: deterministic random unit vectors and records."""
from __future__ import annotations

import numpy as np
from mmretrieve.index import Record
from mmretrieve.modality import Modality

DIM = 16
FP = {"preset": "tiny-random", "weights": "seed:0", "preprocess": {"image_size": 32}}
MODS = [Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.TEXT]


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_records(n: int, prefix: str = "f") -> list[Record]:
    return [Record(path=f"/media/{prefix}{i}.bin", modality=MODS[i % 4], start=float(i), end=float(i) + 1.0,
                   content_hash=f"h{i}", mtime=1000.0 + i, size=10 + i,
                   metadata={"colour": ["red", "green", "blue"][i % 3], "n": i, "even": i % 2 == 0})
            for i in range(n)]
