"""Synthetic vectors with the structure of real embeddings, for index tests and benchmarks.

Clustered unit vectors (items of one kind sit near each other) and exact ground truth, so a recall
measurement can fail honestly. Queries like text queries come from ``index.tuning.offset_queries``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["clustered_unit_vectors", "iter_clustered_unit_vectors", "exact_top_k"]


def iter_clustered_unit_vectors(n: int, dim: int, *, clusters: int = 256, spread: float = 0.6, seed: int = 0,
                                chunk: int = 100_000) -> Iterator[np.ndarray]:
    """n unit vectors in chunks: a random cluster centre plus Gaussian noise of norm ~``spread``,
    renormalised. Deterministic for (n, dim, clusters, spread, seed) whatever ``chunk`` is."""
    centres = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for lo in range(0, n, chunk):
        rng = np.random.default_rng([seed, lo])
        m = min(chunk, n - lo)
        which = rng.integers(0, clusters, size=m)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        v = centres[which] + noise
        yield (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def clustered_unit_vectors(n: int, dim: int, **kwargs) -> np.ndarray:
    """All of iter_clustered_unit_vectors at once."""
    parts = list(iter_clustered_unit_vectors(n, dim, **kwargs))
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def exact_top_k(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k largest inner products of each query with ``base``, best first."""
    scores = queries @ base.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
