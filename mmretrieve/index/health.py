"""What an index backend reports about its own storage (IndexBackend.check) for verify to judge."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["CacheCheck", "IndexCheck"]


@dataclass(frozen=True)
class CacheCheck:
    """State of the search structure beside the stored vectors (the local index's vectors.faiss).

    status is ok | missing | stale | corrupt | foreign.
    """

    status: str
    detail: str = ""
    generation: int | None = None
    ntotal: int | None = None
    missing_ids: tuple[int, ...] = ()  # stored, not in the search structure
    extra_ids: tuple[int, ...] = ()  # in the search structure, not stored
    mismatched_ids: tuple[int, ...] = ()  # cached vector differs from the stored one

    @property
    def ok(self) -> bool:
        # a stale or missing cache is normal (it is caught up from the stored vectors); damage is not
        return self.status in ("ok", "stale", "missing") and not (self.missing_ids or self.extra_ids or self.mismatched_ids)


@dataclass(frozen=True)
class IndexCheck:
    """One consistent look at an index's storage.

    ``files`` maps every stored path to its recorded content hash; ``mixed_files`` are paths whose
    rows carry different hashes. Row ids: ``orphan_items`` (metadata without a vector),
    ``orphan_vectors`` (a vector without metadata), ``bad_vectors`` (wrong size or NaN/inf),
    ``duplicates`` (every row of a (path, modality, window) except the newest one).
    ``generation`` counts committed writes where the backend keeps such a counter, else None;
    ``generation_behind`` is the newest generation found in the data when the counter is behind it.
    """

    generation: int | None
    counts: dict[str, int]
    files: Mapping[str, str | None]
    cache: CacheCheck
    orphan_items: tuple[int, ...] = ()
    orphan_vectors: tuple[int, ...] = ()
    bad_vectors: tuple[int, ...] = ()
    duplicates: tuple[int, ...] = ()
    mixed_files: tuple[str, ...] = ()
    generation_behind: int | None = None

    @property
    def entries(self) -> int:
        return int(self.counts.get("total", 0))
