"""Re-rank vectors: a memory-mapped copy of the stored vectors, addressed by id, that an approximate
index re-scores its candidates with (no SQL per query).

Like vectors.faiss it is DERIVED from the metadata store and only saves work: row ``i`` holds the
vector of id ``i`` (rows of ids that never existed or were removed are zeros) in float16 (default,
half the bytes) or float32. Ids are never reused and a stored vector never changes, so a file
written at one generation stays right for every id it holds; ids added later are read from the
database (and rounded to the file's precision, so a result never depends on where a row came from)
until the next save extends the file. File format:

    b"MMRRERANK\\x01\\n" | header slot length (8 bytes, little endian) | header JSON (padded) | rows

The header holds generation, database uuid, dim, dtype, rows, payload length and sha256. Opening
checks magic, header and length (a file of another database or of a newer state is ignored);
the checksum and the content against the database are verified by ``UnifiedIndex.check()``
(like SQLite's own full check, too slow for every open of a multi-GB file).
"""
from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import IndexCorruptError
from .layout import framed_file, read_framed_header
from .records import to_float32

__all__ = ["RERANK_NAME", "RERANK_DTYPES", "RerankTable", "build_rerank_table", "write_rerank",
           "open_rerank", "rerank_digest"]

RERANK_NAME = "rerank.vec"
RERANK_DTYPES = {"float16": "<f2", "float32": "<f4"}
MAGIC = b"MMRRERANK\x01\n"
_COPY_ROWS = 65536
_HINT = "delete it (or run `mmretrieve verify --repair`); it is rebuilt from meta.sqlite on the next save"


@dataclass
class RerankTable:
    """Vectors by id for re-ranking: ``data[i]`` is the vector of id i (a memmap or an array)."""

    data: np.ndarray
    dtype: str
    generation: int
    uuid: str

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    def rounded(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors rounded to this table's precision (as float32), like the rows it holds."""
        return to_float32(np.asarray(vectors, dtype=RERANK_DTYPES[self.dtype]))

    def matrix(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows of ids that are all < rows."""
        return to_float32(self.data[ids])


def _check_dtype(dtype: str) -> str:
    if dtype not in RERANK_DTYPES:
        raise ValueError(f"rerank_dtype={dtype!r} must be one of {sorted(RERANK_DTYPES)}")
    return dtype


def build_rerank_table(chunks: Iterable[tuple[np.ndarray, np.ndarray]], *, rows: int, dim: int, dtype: str,
                       generation: int, uuid: str) -> RerankTable:
    """An in-memory table (for an index without a directory) from (ids, vectors) chunks."""
    data = np.zeros((rows, dim), dtype=RERANK_DTYPES[_check_dtype(dtype)])
    for ids, vecs in chunks:
        data[ids] = vecs
    return RerankTable(data, dtype, generation, uuid)


def _rows_stream(base: RerankTable | None, chunks: Iterable[tuple[np.ndarray, np.ndarray]], rows: int,
                 dim: int, np_dtype: str) -> Iterator[np.ndarray]:
    """Blocks of the new table in row order: the base file's rows, then the chunks (ascending ids)
    with zero rows for the ids between them."""
    written = 0
    if base is not None:
        for lo in range(0, min(base.rows, rows), _COPY_ROWS):
            block = np.asarray(base.data[lo:min(lo + _COPY_ROWS, base.rows, rows)], dtype=np_dtype)
            written += len(block)
            yield block
    for ids, vecs in chunks:
        keep = ids >= written
        ids, vecs = ids[keep], vecs[keep]
        if not len(ids):
            continue
        if np.any(np.diff(ids) <= 0) or int(ids[-1]) >= rows:
            raise ValueError("re-rank rows must come in ascending id order below the row count")
        block = np.zeros((int(ids[-1]) + 1 - written, dim), dtype=np_dtype)
        block[ids - written] = vecs
        written += len(block)
        yield block
    while written < rows:
        n = min(_COPY_ROWS, rows - written)
        written += n
        yield np.zeros((n, dim), dtype=np_dtype)


def write_rerank(path: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], *, rows: int, dim: int,
                 dtype: str, generation: int, uuid: str, base: RerankTable | None = None) -> None:
    """Write the table atomically, streamed: ``base``'s rows (an older table of the same database)
    then ``chunks`` of (ascending ids, vectors) for the ids after it."""
    np_dtype = RERANK_DTYPES[_check_dtype(dtype)]
    header = {"format": 1, "generation": int(generation), "uuid": uuid, "dim": int(dim), "dtype": dtype,
              "rows": int(rows)}
    with framed_file(path, MAGIC, header) as payload:
        for block in _rows_stream(base, chunks, rows, dim, np_dtype):
            payload.write(np.ascontiguousarray(block).tobytes())


def _read_header(path: str, dim: int) -> tuple[dict[str, Any], int]:
    try:
        with open(path, "rb") as f:
            header = read_framed_header(f, path, MAGIC, "re-rank file", _HINT)
            size = os.fstat(f.fileno()).st_size
            offset = f.tell()
    except OSError as exc:
        raise IndexCorruptError(f"{path}: cannot read ({exc})") from None
    ok = isinstance(header, dict) and header.get("dtype") in RERANK_DTYPES and all(
        isinstance(header.get(k), int) and not isinstance(header.get(k), bool) and header[k] >= 0
        for k in ("generation", "rows", "nbytes", "dim")) and isinstance(header.get("uuid"), str)
    if not ok:
        raise IndexCorruptError(f"{path}: header lacks generation/uuid/dim/dtype/rows/nbytes; {_HINT}")
    if header["dim"] != dim:
        raise IndexCorruptError(f"{path}: re-rank rows of dim {header['dim']}, the index has dim {dim}; {_HINT}")
    itemsize = np.dtype(RERANK_DTYPES[header["dtype"]]).itemsize
    if header["nbytes"] != header["rows"] * dim * itemsize or size - offset != header["nbytes"]:
        raise IndexCorruptError(f"{path}: {size - offset} payload bytes, header says {header['rows']} rows of "
                                f"{dim} {header['dtype']} (truncated or appended); {_HINT}")
    return header, offset


def open_rerank(path: str, *, dim: int) -> RerankTable:
    """Map a re-rank file read-only after checking its header and length (IndexCorruptError)."""
    header, offset = _read_header(path, dim)
    np_dtype = RERANK_DTYPES[header["dtype"]]
    if header["rows"] == 0:
        data = np.zeros((0, dim), dtype=np_dtype)
    else:
        try:
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise IndexCorruptError(f"{path}: cannot map ({exc})") from None
        # a plain read-only array over the mapping (np.memmap's per-index wrapping costs more than a
        # small re-rank); the mapping lives as long as the array
        data = np.frombuffer(mapped, dtype=np_dtype, count=header["rows"] * dim, offset=offset).reshape(
            header["rows"], dim)
    return RerankTable(data, header["dtype"], header["generation"], header["uuid"])


def rerank_digest(path: str, *, dim: int) -> tuple[dict[str, Any], bool]:
    """(header, whether the payload's sha256 matches it), streamed; IndexCorruptError for a bad header."""
    header, offset = _read_header(path, dim)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    except OSError as exc:
        raise IndexCorruptError(f"{path}: cannot read ({exc})") from None
    return header, digest.hexdigest() == header.get("sha256")
