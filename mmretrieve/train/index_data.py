"""Inversion training data from an index: the image and clip vectors it already stores.

Nothing is decoded and no reference goes through the encoder: a file's stored window vectors are
pooled into its item vector (``pool_windows``, the rule the index and evaluation use), then batched
in the same seeded order as :class:`~mmretrieve.train.data.TaskStream`. The encoder of the run must
be the one that built the index (its fingerprint is checked), since the mapping network learns to
invert that encoder's vectors into that encoder's text tower.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mmretrieve.embedding import pool_windows
from mmretrieve.errors import EncoderMismatchError
from mmretrieve.index.fingerprint import fingerprint_difference
from mmretrieve.index.unified import UnifiedIndex
from mmretrieve.modality import Modality

from .data import Batch, batch_order, split_items

__all__ = ["VectorSet", "VectorStream", "index_encoder_record", "load_index_vectors"]


@dataclass(frozen=True)
class VectorSet:
    """The item vectors (N, D), L2-normalised, of one modality, keyed by file path."""

    modality: Modality
    keys: tuple[str, ...]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def _open(path: str) -> UnifiedIndex:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.root={path!r}: no index there (data.kind=index trains from a saved index)")
    return UnifiedIndex.open(path, readonly=True)


def index_encoder_record(path: str | os.PathLike) -> dict:
    """The encoder record of a saved index: ``{"preset", "weights_path", "video_head", "preset_file"}``;
    ``preset_file`` is True when the index was built from a preset JSON file (its name alone does not
    rebuild it)."""
    path = os.fspath(path)
    index = _open(path)
    try:
        fp = index.fingerprint
    finally:
        index.close()
    enc = fp.get("encoder") if isinstance(fp, dict) else None
    if not isinstance(enc, dict) or "preset" not in enc:
        raise EncoderMismatchError(f"{path}: not an mmretrieve retriever index (no encoder record)")
    video = enc.get("video")
    return {"preset": enc["preset"], "weights_path": fp.get("weights_path"),
            "video_head": video.get("head") if isinstance(video, dict) else None,
            "preset_file": fp.get("preset_definition") is not None}


def load_index_vectors(path: str | os.PathLike, encoder, tasks: Sequence[str], *, val_fraction: float,
                       max_val_items: int | None, seed: int) -> tuple[dict[str, VectorSet], dict[str, VectorSet]]:
    """(train, val) item vectors per task from the index at ``path``, split by a seeded ``val_fraction``."""
    path = os.fspath(path)
    index = _open(path)
    try:
        stored = index.fingerprint.get("encoder")
        diff = fingerprint_difference(encoder.fingerprint(), stored) if isinstance(stored, dict) else "no encoder record"
        if diff is not None:
            raise EncoderMismatchError(
                f"{path}: the index was built by another encoder than this run's (preset "
                f"{encoder.preset.name!r}): {diff}. Train with the index's preset and weights "
                f"(`mmretrieve train --index` takes them from the index)")
        wanted = {Modality(t) for t in tasks}
        windows: dict[tuple[Modality, str], list[tuple[float, np.ndarray]]] = defaultdict(list)
        for ids, vecs in index.iter_vectors():
            for hit, vec in zip(index.get(ids), vecs):
                if hit.modality in wanted and hit.path is not None:
                    windows[(hit.modality, hit.path)].append((hit.start or 0.0, vec))
    finally:
        index.close()
    train: dict[str, VectorSet] = {}
    val: dict[str, VectorSet] = {}
    for m in sorted(wanted, key=lambda m: m.value):
        keys = sorted(p for (mm, p) in windows if mm is m)
        if not keys:
            raise ValueError(f"data: no {m.value} entries in index {path} (data.tasks={list(tasks)!r})")
        item_vecs = np.stack([pool_windows(np.stack([v for _, v in sorted(windows[(m, k)], key=lambda w: w[0])]))
                              for k in keys]).astype(np.float32)
        tr, va = split_items(len(keys), val_fraction, seed)
        va = va[: max_val_items or None]
        train[m.value] = VectorSet(m, tuple(keys[i] for i in tr), item_vecs[tr])
        val[m.value] = VectorSet(m, tuple(keys[i] for i in va), item_vecs[va] if va else item_vecs[:0])
    return train, val


class VectorStream:
    """Seeded batches of stored vectors; ``batch(step)`` is a pure function of step (exact resume),
    in the order a :class:`~mmretrieve.train.data.TaskStream` of the same size would take."""

    def __init__(self, vectors: VectorSet, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if len(vectors) < 2:
            raise ValueError(f"{vectors.modality.value}: need at least 2 training items, got {len(vectors)}")
        self.vectors = vectors
        self.global_batch = min(batch_size * world_size, len(vectors))
        self.global_batch -= self.global_batch % world_size
        if self.global_batch < world_size:
            raise ValueError(f"{vectors.modality.value}: {len(vectors)} items cannot fill one batch per rank")
        self.per_cycle = max(1, len(vectors) // self.global_batch)
        self.seed, self.rank, self.world = seed, rank, world_size
        self.task = vectors.modality.value

    def __len__(self) -> int:
        return self.per_cycle

    def batch(self, step: int) -> Batch:
        units = batch_order(len(self.vectors), self.global_batch, self.per_cycle, self.seed, self.task, step)
        per = len(units) // self.world
        mine = units[self.rank * per:(self.rank + 1) * per]
        media = torch.from_numpy(self.vectors.vectors[mine])
        return Batch(self.vectors.modality, media, ("",) * len(mine), tuple(mine), tuple(mine), precomputed=True)

    def warm(self) -> None:
        """Nothing to decode."""
