"""The faiss side of an index: an IndexIDMap2 (inner product) over any factory string, and its
on-disk cache file.

The cache is DERIVED from the metadata store and only saves rebuild time. File format:
    b"MMRFAISS\\x01\\n" | header length (8 bytes, little endian) | header JSON | faiss bytes
The header holds the generation the cache reflects, the database uuid, dim, the faiss structure
("factory": what was built, e.g. the structure an ``auto`` index chose), ntotal, payload length and
sha256. It is checked (magic, lengths, checksum) BEFORE faiss parses a byte, so
a truncated or altered file becomes IndexCorruptError instead of reaching faiss's C++ reader.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import faiss
import numpy as np

from ..errors import IndexCorruptError, MMRError
from .layout import framed_file, read_framed_header

__all__ = ["IndexTrainingError", "make_faiss_index", "validate_factory", "train_index",
           "write_cache", "read_cache", "search_index", "remove_ids", "IdFilter"]

MAGIC = b"MMRFAISS\x01\n"
TRAIN_SAMPLE = 262_144
_BLOCK = 1 << 22  # bytes per read / write when hashing, parsing and writing a cache file


class IndexTrainingError(MMRError, ValueError):
    """A trainable faiss factory (IVF, PQ, ...) cannot be trained yet: too few stored vectors."""


def make_faiss_index(dim: int, factory: str) -> faiss.IndexIDMap2:
    try:
        inner = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ValueError(f"factory={factory!r} is not a faiss index_factory string ({first})") from None
    return faiss.IndexIDMap2(inner)


def validate_factory(dim: int, factory: str) -> None:
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory={factory!r} must be a non-empty faiss factory string such as 'Flat'")
    if "IDMap" in factory:
        raise ValueError(f"factory={factory!r}: leave out IDMap, the index always wraps it in IndexIDMap2")
    make_faiss_index(dim, factory)


def train_index(index: faiss.IndexIDMap2, vectors: np.ndarray, factory: str) -> None:
    """Train a trainable index on the given sample; IndexTrainingError when faiss refuses."""
    try:
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise IndexTrainingError(
            f"factory={factory!r} must be trained before searching, and {len(vectors)} stored vectors are "
            f"too few ({msg}); add more items or create the index with factory='Flat'") from None
    if not index.is_trained:
        raise IndexTrainingError(f"factory={factory!r}: training on {len(vectors)} vectors did not succeed")


def write_cache(path: str, index: faiss.IndexIDMap2, *, generation: int, uuid: str, dim: int,
                factory: str) -> None:
    """Write the cache atomically, streaming faiss's bytes to disk (hashed on the way) instead of
    serialising the whole index in memory first: the header is a fixed-size slot, JSON padded with
    spaces, filled in once the payload's length and sha256 are known."""
    header = {"format": 1, "generation": int(generation), "uuid": uuid, "dim": int(dim), "factory": factory,
              "ntotal": int(index.ntotal)}
    with framed_file(path, MAGIC, header) as payload:
        faiss.write_index(index, faiss.PyCallbackIOWriter(payload.write, _BLOCK))


def read_cache(path: str, *, dim: int, factory: str | None) -> tuple[faiss.IndexIDMap2, dict[str, Any]]:
    """Load and verify a cache file; IndexCorruptError naming the file for any defect. ``factory``
    None accepts any structure (the caller compares header["factory"] with the one it serves)."""
    hint = "delete it and reopen the index to rebuild it from meta.sqlite"
    try:
        with open(path, "rb") as f:
            header = read_framed_header(f, path, MAGIC, "faiss cache", hint)
            if header.get("dim") != dim or (factory is not None and header.get("factory") != factory):
                raise IndexCorruptError(
                    f"{path}: cache is for dim={header.get('dim')} factory={header.get('factory')!r}, "
                    f"index has dim={dim} factory={factory!r}; {hint}")
            nbytes = header["nbytes"]
            size_left = os.fstat(f.fileno()).st_size - f.tell()
            if size_left != nbytes:
                raise IndexCorruptError(
                    f"{path}: {size_left} payload bytes, header says {nbytes} (truncated or appended); {hint}")
            # checksum first (streamed), then faiss reads the same open file: memory stays near the
            # index's own size instead of file bytes + a parse copy + the index
            start = f.tell()
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
            if digest.hexdigest() != header.get("sha256"):
                raise IndexCorruptError(f"{path}: checksum mismatch (file altered or damaged); {hint}")
            f.seek(start)
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read, _BLOCK))
            except RuntimeError as exc:
                raise IndexCorruptError(f"{path}: faiss cannot parse the cache ({str(exc)[:200]}); {hint}") from None
    except OSError as exc:
        raise IndexCorruptError(f"{path}: cannot read ({exc})") from None
    if not isinstance(header.get("factory"), str):
        raise IndexCorruptError(f"{path}: header lacks the factory string; {hint}")
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim or index.ntotal != header.get("ntotal"):
        raise IndexCorruptError(f"{path}: cache content does not match its header; {hint}")
    return index, header


def _search_setting(index: faiss.IndexIDMap2) -> int:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexIVF):
        return int(inner.nprobe)
    if isinstance(inner, faiss.IndexHNSW):
        return int(inner.hnsw.efSearch)
    return 0


def _search_params(index: faiss.IndexIDMap2, selector: Any, exhaustive: bool) -> faiss.SearchParameters:
    inner = faiss.downcast_index(index.index)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None and inner is ivf or (ivf is not None and isinstance(inner, faiss.IndexIVF)):
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist if exhaustive else ivf.nprobe)
    if isinstance(inner, faiss.IndexHNSW):
        ef = max(inner.hnsw.efSearch, 16)
        return faiss.SearchParametersHNSW(sel=selector, efSearch=ef * (16 if exhaustive else 1))
    return faiss.SearchParameters(sel=selector)


class IdFilter:
    """A set of ids as a faiss selector (a bitmap over id values; built once, reused per query)."""

    def __init__(self, ids: np.ndarray):
        self._params: dict[tuple, faiss.SearchParameters] = {}  # per (index, exhaustive, nprobe/efSearch)
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        top = int(self.ids.max()) + 1 if len(self.ids) else 1
        member = np.zeros(top, dtype=bool)
        member[self.ids] = True
        self._bits = np.packbits(member, bitorder="little")  # kept alive: the selector points into it
        self.selector = faiss.IDSelectorBitmap(len(self._bits), faiss.swig_ptr(self._bits))

    def __len__(self) -> int:
        return len(self.ids)

    def params(self, index: faiss.IndexIDMap2, exhaustive: bool) -> faiss.SearchParameters:
        """Search parameters carrying this selector, built once per index and setting (building the
        SWIG objects costs more than a small filtered search)."""
        key = (id(index), exhaustive, _search_setting(index))
        if key not in self._params:
            if len(self._params) > 8:
                self._params.clear()
            self._params[key] = _search_params(index, self.selector, exhaustive)
        return self._params[key]


def search_index(index: faiss.IndexIDMap2, queries: np.ndarray, k: int, ids: "np.ndarray | IdFilter | None" = None,
                 *, exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products; ids (an array or a prebuilt IdFilter) restricts the search to those ids."""
    if ids is None and not exhaustive:
        return index.search(queries, k)
    if isinstance(ids, IdFilter):
        return index.search(queries, k, params=ids.params(index, exhaustive))
    if ids is None:
        selector = faiss.IDSelectorAll()
    else:
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    params = _search_params(index, selector, exhaustive)
    return index.search(queries, k, params=params)


def remove_ids(index: faiss.IndexIDMap2, ids: np.ndarray) -> bool:
    """Remove ids from the faiss index; False when this index type cannot remove (e.g. HNSW)."""
    if len(ids) == 0:
        return True
    try:
        index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
    except RuntimeError:
        return False
    return True
