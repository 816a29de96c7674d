"""Writing embedded files into an index: the one commit loop of Retriever.add and index_with_ray.

Every window of a file becomes one Record; a file is written with ``replace_path`` (its old rows,
if any, go in the same transaction) and files are committed ``batch_size`` at a time inside one
``index.batch()``. A crash therefore loses at most the batch in flight, never half a file, and a
re-run picks up from the index's file states.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .index import IndexBackend, Record
from .modality import Modality
from .embedding import Embedded, Failure

__all__ = ["AddReport", "file_records", "write_files", "commit_files"]


@dataclass(frozen=True)
class AddReport:
    """What one ``add`` did. ``failed`` holds (path or '<in-memory #i>', reason) for every skipped input."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    ids: tuple[int, ...] = ()

    @property
    def entries(self) -> int:
        """Index entries written (a long video or recording gives one entry per window)."""
        return len(self.ids)

    def __str__(self) -> str:
        lines = [
            f"added {len(self.added)} file(s), updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"failed {len(self.failed)}; {self.entries} index entries written"
        ]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def file_records(item: Embedded) -> list[Record]:
    """One Record per window of an embedded source (a text's string is kept as metadata "text")."""
    s = item.source
    metadata = dict(s.metadata)
    if s.modality is Modality.TEXT:
        metadata["text"] = s.value
    return [
        Record(path=s.path, modality=s.modality, start=start, end=end, content_hash=item.content_hash,
               mtime=item.mtime, size=item.size, metadata=metadata)
        for start, end in item.windows
    ]


def write_files(index: IndexBackend, items: Sequence[Embedded]) -> list[int]:
    """Store embedded sources in ONE transaction (a file's old entries are replaced); returns the ids."""
    ids: list[int] = []
    with index.batch():
        for item in items:
            records = file_records(item)
            if item.source.path is not None:
                ids.extend(index.replace_path(item.source.path, item.vectors, records))
            else:
                ids.extend(index.add(item.vectors, records))
    return ids


def commit_files(
    index: IndexBackend,
    results: Iterable[Embedded | Failure],
    *,
    batch_size: int,
    replacing: frozenset[str] = frozenset(),
    unchanged: Sequence[str] = (),
    failed: Sequence[tuple[str, str]] = (),
) -> AddReport:
    """Write a stream of embedded files (and failures) into ``index``, ``batch_size`` files per transaction.

    ``replacing``: indexed paths whose content changed (reported as updated, not added);
    ``unchanged`` and ``failed`` (path, reason) come from the listing and planning before embedding.
    A failure without a path is named ``<in-memory #i>`` by its place in ``results``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    added: list[str] = []
    updated: list[str] = []
    ids: list[int] = []
    failures = list(failed)
    pending: list[Embedded] = []

    def commit() -> None:
        ids.extend(write_files(index, pending))
        for item in pending:
            if item.source.path is not None:
                (updated if item.source.path in replacing else added).append(item.source.path)
        pending.clear()

    for pos, item in enumerate(results):
        if isinstance(item, Failure):
            failures.append((item.path or f"<in-memory #{pos}>", item.reason))
            continue
        pending.append(item)
        if len(pending) >= batch_size:
            commit()
    if pending:
        commit()
    return AddReport(tuple(added), tuple(updated), tuple(unchanged), tuple(failures), tuple(ids))
