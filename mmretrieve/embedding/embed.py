"""Batch embedding: sources -> decode/preprocess (DataLoader worker processes) -> encode -> vectors.

Decoding and preprocessing run in worker processes while the model encodes the previous batch.
:func:`embed_sources` gives every window's vector (what an index stores); :func:`embed_items` gives
each item's whole-item vector, the :func:`~mmretrieve.embedding.encode.pool_windows` of those same
window vectors (what evaluation scores and ``Retriever.embed`` returns for a file).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, MutableMapping, Sequence

import numpy as np
import torch

from ..errors import MediaError
from ..modality import Modality
from .encode import autocast, encode_texts, encode_windows, pool_windows, to_numpy
from .prepare import Prepared, Preparer, Source
from .sampling import Sampling

__all__ = ["Embedded", "Failure", "default_workers", "prepare_all", "embed_sources", "embed_items"]


@dataclass(frozen=True)
class Embedded:
    """A source's vectors, one row per window, with each window's start/end seconds."""

    source: Source
    vectors: np.ndarray  # (W, D) float32, L2-normalised
    windows: tuple[tuple[float | None, float | None], ...]
    content_hash: str | None
    mtime: float | None
    size: int | None


@dataclass(frozen=True)
class Failure:
    source: Source
    reason: str

    @property
    def path(self) -> str | None:
        return self.source.name


def default_workers(n_items: int) -> int:
    """Worker processes for decoding: none for a handful of items, else up to 4, leaving a core to the model."""
    if n_items < 16:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, sources: Sequence[Source], preparer: Preparer):
        self.sources, self.preparer = sources, preparer

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Prepared:
        return self.preparer(i, self.sources[i])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x):
    return x


def prepare_all(preparer: Preparer, sources: Sequence[Source], num_workers: int | None = None) -> Iterator[Prepared]:
    """Prepared sources in order (``position`` = index in ``sources``), decoded in worker processes."""
    if not sources:
        return iter(())
    workers = default_workers(len(sources)) if num_workers is None else num_workers
    return iter(torch.utils.data.DataLoader(
        _Dataset(sources, preparer), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
        worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None))


def embed_sources(
    encoder,
    sources: Sequence[Source],
    *,
    sampling: Sampling,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
    on_item: Callable[[], None] | None = None,
) -> Iterator[Embedded | Failure]:
    """Embed sources in batches; yields one Embedded or Failure per source (in completion order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    from tqdm.auto import tqdm

    texts = [s for s in sources if s.modality is Modality.TEXT]
    media = [s for s in sources if s.modality is not Modality.TEXT]
    bar = tqdm(total=len(sources), desc="embedding", unit="item", disable=not progress or len(sources) < 2)
    try:
        with torch.inference_mode(), autocast(encoder.device):
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                vecs = to_numpy(encode_texts(encoder, [str(s.value) for s in chunk]))
                for s, v in zip(chunk, vecs):
                    bar.update(1)
                    yield Embedded(s, v[None, :], ((None, None),), None, None, None)
            pending: dict[Modality, list[Prepared]] = {m: [] for m in Modality}
            load: dict[Modality, int] = {m: 0 for m in Modality}
            limit = {Modality.IMAGE: batch_size, Modality.AUDIO: batch_size, Modality.VIDEO: batch_size * 8}
            for prep in prepare_all(Preparer(encoder, sampling), media, num_workers):
                source = media[prep.position]
                if prep.error is not None:
                    bar.update(1)
                    yield Failure(source, prep.error)
                    continue
                m = source.modality
                pending[m].append(prep)
                load[m] += sum(t.shape[0] for t in prep.tensors) if m is Modality.VIDEO else len(prep.tensors)
                if load[m] >= limit[m]:
                    for item in _flush(encoder, m, pending[m], media, batch_size):
                        bar.update(1)
                        yield item
                    pending[m], load[m] = [], 0
            for m, preps in pending.items():
                if preps:
                    for item in _flush(encoder, m, preps, media, batch_size):
                        bar.update(1)
                        yield item
    finally:
        bar.close()


def _flush(encoder, modality: Modality, preps: list[Prepared], media: Sequence[Source], batch_size: int) -> Iterable[Embedded]:
    tensors = [t for p in preps for t in p.tensors]
    vecs = to_numpy(encode_windows(encoder, modality, tensors, batch_size))
    row = 0
    for p in preps:
        n = len(p.tensors)
        yield Embedded(media[p.position], vecs[row : row + n], tuple(p.windows), p.content_hash, p.mtime, p.size)
        row += n


def embed_items(
    encoder,
    sources: Sequence[Source],
    *,
    sampling: Sampling,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = False,
    cache: MutableMapping | None = None,
) -> np.ndarray:
    """(N, D) whole-item vectors of media sources of ONE modality, in order: every window of every item
    is embedded exactly as indexing embeds it, then pooled (:func:`pool_windows`).

    A source that cannot be decoded raises MediaError naming it (an evaluation must not silently
    score fewer items). ``cache`` keeps prepared windows between calls (a training run's validation),
    keyed by the source's name and the sampling.
    """
    if not sources:
        return np.zeros((0, encoder.dim), np.float32)
    modality = sources[0].modality
    if modality is Modality.TEXT or any(s.modality is not modality for s in sources):
        raise ValueError("embed_items: sources must be media of one modality (texts: encode_texts)")
    key = lambda s: (s.name if s.name is not None else id(s), sampling)  # noqa: E731
    prepared: list[Prepared | None] = [cache.get(key(s)) if cache is not None else None for s in sources]
    missing = [i for i, p in enumerate(prepared) if p is None]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc=f"embed {modality.value}", unit="item")
    owners: list[int] = []
    tensors: list[torch.Tensor] = []
    out = []

    def flush() -> None:
        if tensors:
            with torch.inference_mode(), autocast(encoder.device):
                vecs = encode_windows(encoder, modality, tensors, batch_size)
                first = owners[0]
                out.append(to_numpy(pool_windows(vecs, [o - first for o in owners], owners[-1] - first + 1)))
            tensors.clear()
            owners.clear()

    fresh = prepare_all(Preparer(encoder, sampling), [sources[i] for i in missing], num_workers)
    limit = batch_size * 8 if modality is Modality.VIDEO else batch_size
    for i, s in enumerate(sources):
        p = prepared[i]
        if p is None:
            p = next(fresh)
            if p.error is not None:
                raise MediaError(s.name, p.error)
            if cache is not None:
                cache[key(s)] = p
        tensors.extend(p.tensors)
        owners.extend([i] * len(p.tensors))
        if bar is not None:
            bar.update(1)
        if len(tensors) >= limit:
            flush()
    flush()
    if bar is not None:
        bar.close()
    return np.concatenate(out)
