"""IndexBackend: what Retriever and verify ask of an index, written down.

UnifiedIndex (faiss + SQLite, unified.py) and MilvusIndex (milvus.py) both satisfy it; one
contract test (tests/index/test_contract.py) runs the same checks against both. Construction
(create/open and their options) is each backend's own business and is not part of the contract.

Promises every backend keeps:
- a file's windows are written and replaced as a whole: ``replace_path`` drops every row of the
  path and adds the new ones; inside ``batch()`` all writes land together or (on an exception in the
  body) none does;
- ``search`` is exact about filters: k hits whenever k entries match ``modality`` and ``where``;
- ``check_fingerprint`` refuses (EncoderMismatchError) vectors of another encoder;
- what was written survives ``close()`` and a reopen.
"""
from __future__ import annotations

import os
from typing import Any, ContextManager, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .health import IndexCheck
from .records import Hit, Record

__all__ = ["IndexBackend", "FileState"]

FileState = tuple[str | None, float | None, int | None]
"""(content_hash, mtime, size) recorded for an indexed file."""


@runtime_checkable
class IndexBackend(Protocol):
    """The index contract (see the module docstring for the behaviour behind each member)."""

    @property
    def dim(self) -> int:
        """Dimension of every stored vector."""

    @property
    def factory(self) -> str:
        """The backend's name of its search structure (a faiss factory string, a Milvus index type)."""

    @property
    def fingerprint(self) -> dict:
        """The encoder record the index was created with (canonical JSON form)."""

    @property
    def path(self) -> str | None:
        """Where the index lives (a directory, ``uri#collection``), None in memory."""

    def check_fingerprint(self, fingerprint: dict) -> None:
        """EncoderMismatchError naming the keys where ``fingerprint`` differs from the index's."""

    # writes
    def batch(self) -> ContextManager[Any]:
        """Group writes: all of them are stored when the body ends, none when it raises."""

    def add(self, vectors: Any, records: Sequence[Record]) -> list[int]:
        """Store one vector per record; returns the new ids."""

    def replace_path(self, path: str | os.PathLike, vectors: Any, records: Sequence[Record]) -> list[int]:
        """Drop every row of ``path`` and store the new ones (each record's path must be ``path``)."""

    def remove(self, ids: Any) -> int:
        """Remove rows by id; returns how many existed."""

    def remove_path(self, path: str | os.PathLike) -> int:
        """Remove every row of a file; returns how many."""

    # reads
    def file_state(self, path: str | os.PathLike) -> FileState | None:
        """(content_hash, mtime, size) of an indexed file, None when it is not indexed."""

    def paths(self) -> list[str]:
        """Every indexed file path, sorted."""

    def __len__(self) -> int:
        """Number of stored entries."""

    def stats(self) -> dict:
        """{"total": n, "text": n, "image": n, "video": n, "audio": n}."""

    def get(self, ids: Any) -> list[Hit]:
        """Stored entries by id, in the given order (score NaN); KeyError for unknown ids."""

    def entries(self, path: str | os.PathLike) -> list[Hit]:
        """Stored entries of one file (score NaN) in window order; [] when it is not indexed."""

    def iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks covering every stored entry once."""

    def structure(self) -> dict:
        """What search runs on: {"structure": str, "exact": bool, "params": dict, "recall": float or
        None (recall@10 it was tuned to), "note": str, ...}; an approximate structure always names
        the recall it reaches."""

    def search(self, queries: Any, k: int = 10, *, modality: Any = None,
               where: Mapping | None = None) -> list[list[Hit]]:
        """Top-k by inner product per query row, filtered by modality and user metadata."""

    # integrity (verify)
    def check(self) -> IndexCheck:
        """A consistent look at the storage: counts, files and their hashes, damaged rows."""

    def repair(self, check: IndexCheck) -> list[str]:
        """Undo the damage ``check`` found (damaged rows, a bad search structure); what was done."""

    def rebuild(self) -> None:
        """Rebuild the search structure from the stored vectors (written by the next save)."""

    # lifetime
    def save(self, path: str | os.PathLike | None = None) -> None:
        """Make what was written durable (a snapshot elsewhere where the backend supports it)."""

    def close(self) -> None:
        """Persist pending writes and release the index (locks, connections)."""
