"""What the index stores per entry (Record) and what a search returns (Hit)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import IndexCorruptError
from ..modality import Modality, parse_modality

__all__ = ["Record", "Hit"]


@dataclass(frozen=True)
class Record:
    """One index entry: a file (or a window of it, start/end in seconds) or an in-memory item (path None).

    content_hash/mtime/size describe the source file so re-indexing can skip unchanged files;
    metadata is user data stored as JSON (keys must be strings, values JSON-serialisable).
    """

    path: str | None
    modality: Modality
    start: float | None = None
    end: float | None = None
    content_hash: str | None = None
    mtime: float | None = None
    size: int | None = None
    metadata: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A search result (or a stored entry from UnifiedIndex.get, with score NaN)."""

    id: int
    score: float
    path: str | None
    modality: Modality
    start: float | None
    end: float | None
    metadata: dict


def _opt_float(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name}={value!r} is not a number") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: {name}={value!r} must be finite")
    return out


def record_row(record: Record, position: int) -> tuple:
    """Validate a Record and turn it into the SQLite column tuple
    (path, modality, seg_start, seg_end, content_hash, mtime, size, metadata_json)."""
    where = f"records[{position}]"
    if not isinstance(record, Record):
        raise TypeError(f"{where} is a {type(record).__name__}, expected mmretrieve.index.Record")
    path = None if record.path is None else os.fspath(record.path)
    if path is not None and not isinstance(path, str):
        raise TypeError(f"{where}: path must be a str or None, got {type(path).__name__}")
    modality = parse_modality(record.modality, f"{where}.modality").value
    start = _opt_float(record.start, "start", where)
    end = _opt_float(record.end, "end", where)
    if start is not None and end is not None and end < start:
        raise ValueError(f"{where}: end={end} is before start={start}")
    mtime = _opt_float(record.mtime, "mtime", where)
    size = None
    if record.size is not None:
        if isinstance(record.size, bool) or not isinstance(record.size, int) or record.size < 0:
            raise ValueError(f"{where}: size={record.size!r} must be a non-negative int")
        size = int(record.size)
    if record.content_hash is not None and not isinstance(record.content_hash, str):
        raise TypeError(f"{where}: content_hash must be a str or None")
    metadata = record.metadata if record.metadata is not None else {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{where}: metadata must be a mapping, got {type(metadata).__name__}")
    if any(not isinstance(k, str) for k in metadata):
        raise TypeError(f"{where}: metadata keys must be strings")
    try:
        meta_json = json.dumps(dict(metadata), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: metadata is not JSON-serialisable ({exc})") from None
    if _has_nul(metadata):
        raise ValueError(f"{where}: metadata strings must not contain NUL characters "
                         "(SQLite's JSON functions end a string there, so filters could not match it exactly)")
    return (path, modality, start, end, record.content_hash, mtime, size, meta_json)


def _has_nul(value: Any) -> bool:
    """True when a string anywhere in a JSON-like value (keys included) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


_MODALITIES = {m.value: m for m in Modality}
_decode_json = json.JSONDecoder().decode


def hit_from_row(row: tuple, score: float) -> Hit:
    """Build a Hit from (id, path, modality, seg_start, seg_end, metadata_json)."""
    id_, path, modality, start, end, meta_json = row
    try:
        return Hit(int(id_), float(score), path, _MODALITIES[modality], start, end,
                   _decode_json(meta_json) if meta_json else {})
    except (ValueError, TypeError, KeyError) as e:  # json.JSONDecodeError is a ValueError
        what = f"modality {modality!r} is not one of {sorted(_MODALITIES)}" if isinstance(e, KeyError) else e
        raise IndexCorruptError(f"index row {id_!r} ({path!r}) is damaged: {what}") from None


# every float16 bit pattern's float32 value (256 KB): indexing it converts exactly (NaN, infinities and
# subnormals included) and several times faster than numpy's own float16 cast
_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def to_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as float32: float16 through the lookup table, anything else by numpy's cast."""
    if array.dtype == np.float16:
        return np.take(_HALF_TO_FLOAT, array.view(np.uint16))
    return np.asarray(array, dtype=np.float32)


def as_vectors(vectors: Any, dim: int, n_expected: int | None, what: str = "vectors") -> np.ndarray:
    """``vectors`` (array or torch tensor) as C-contiguous float32 (N, dim), checked; a 1-D array is
    one row when ``what == "queries"``. ``n_expected``: the number of records they belong to."""
    if hasattr(vectors, "detach"):  # torch tensor, without importing torch
        vectors = vectors.detach().cpu().numpy()
    arr = np.asarray(vectors)
    if arr.ndim == 1 and what == "queries":
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must be floating point (float32), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if n_expected is not None and arr.shape[0] != n_expected:
        raise ValueError(f"{what} has {arr.shape[0]} rows but {n_expected} records were given")
    return arr
