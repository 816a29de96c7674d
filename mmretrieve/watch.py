"""Keep an index in sync with folders: a full pass, then file-system events applied in batches.

Crash guarantees are the index's own: every ``add`` commits whole files in transactions and each batch
ends with ``save``; a restart begins with a full pass (unchanged files are skipped by content hash), so
after any crash the index again matches the folders. Files that disappear are removed only with
``prune`` (a folder on an unplugged disk must not empty the index).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import MissingExtraError
from .modality import modality_of_path
from .retriever import AddReport

__all__ = ["WatchConfig", "SyncReport", "sync_folders", "apply_changes", "FolderWatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    """``quiet``: seconds without events that close a batch; ``max_delay``: a batch is applied at the latest
    this long after its first event, even while events keep coming; ``prune``: remove vanished files;
    ``allow_untrained``: index media of a modality whose tower is untrained (skipped and reported otherwise)."""

    quiet: float = 1.0
    max_delay: float = 10.0
    prune: bool = False
    metadata: Mapping[str, Any] | None = None
    allow_untrained: bool = False

    def __post_init__(self) -> None:
        if not (self.quiet > 0 and self.max_delay >= self.quiet):
            raise ValueError(f"quiet={self.quiet} must be > 0 and max_delay={self.max_delay} >= quiet")


@dataclass(frozen=True)
class SyncReport:
    """One pass or batch: what ``add`` did and which files were pruned."""

    added: AddReport = field(default_factory=AddReport)
    removed: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.added}; removed {len(self.removed)} vanished file(s)"


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def sync_folders(retriever: Any, roots: Sequence[str], config: WatchConfig = WatchConfig()) -> SyncReport:
    """A full pass: index new and changed media under ``roots``; with ``prune``, drop indexed files under
    them that no longer exist. Saves the index."""
    roots = [os.path.realpath(r) for r in roots]
    report = retriever.add(list(roots), metadata=config.metadata, progress=False,
                           allow_untrained=config.allow_untrained)
    removed: list[str] = []
    if config.prune:
        for path in retriever.index.paths():
            if path is not None and _under(path, roots) and not os.path.exists(path):
                retriever.remove(path)
                removed.append(path)
    _persist(retriever)
    return SyncReport(report, tuple(removed))


def apply_changes(retriever: Any, paths: Iterable[str], roots: Sequence[str], config: WatchConfig = WatchConfig()) -> SyncReport:
    """Bring the given changed paths (files or folders, present or gone) into the index, then save."""
    roots = [os.path.realpath(r) for r in roots]
    own = getattr(retriever.index, "path", None)
    present, gone = [], []
    for p in sorted(set(paths)):
        if own and _under(p, [os.path.realpath(own)]):
            continue  # the index's own files, when it lives inside a watched folder
        if os.path.isdir(p) or (os.path.isfile(p) and modality_of_path(p) is not None):
            present.append(p)
        elif not os.path.lexists(p):
            gone.append(p)
    report = retriever.add(present, metadata=config.metadata, progress=False,
                           allow_untrained=config.allow_untrained) if present else AddReport()
    removed: list[str] = []
    if config.prune and gone:
        indexed = [p for p in retriever.index.paths() if p is not None and _under(p, roots)]
        for g in gone:
            for p in indexed:
                if _under(p, [g]) and not os.path.exists(p) and p not in removed:
                    retriever.remove(p)
                    removed.append(p)
    if report.ids or removed:
        _persist(retriever)
    return SyncReport(report, tuple(removed))


def _persist(retriever: Any) -> None:
    if retriever.index.path is not None:  # an in-memory index has nothing to save
        retriever.save()


class FolderWatcher:
    """Follow ``roots`` with watchdog (inotify on Linux) and apply bursts of changes as batches."""

    def __init__(self, retriever: Any, roots: Sequence[str], config: WatchConfig = WatchConfig(),
                 on_batch: Callable[[SyncReport], None] | None = None):
        for r in roots:
            if not os.path.isdir(r):
                raise ValueError(f"{r}: watching follows folders; give a folder, not a file")
        self.retriever = retriever
        self.roots = [os.path.realpath(r) for r in roots]
        self.config = config
        self.on_batch = on_batch
        self._pending: set[str] = set()
        self._first = 0.0
        self._last = 0.0
        self._cond = threading.Condition()

    def _event(self, *paths: str) -> None:
        with self._cond:
            now = time.monotonic()
            if not self._pending:
                self._first = now
            self._last = now
            self._pending.update(os.fsdecode(p) for p in paths if p)
            self._cond.notify()

    def _take_batch(self, stop: threading.Event) -> set[str] | None:
        """Wait for a burst to settle (or stop); returns its paths."""
        with self._cond:
            while not stop.is_set():
                if self._pending:
                    now = time.monotonic()
                    due = min(self._last + self.config.quiet, self._first + self.config.max_delay)
                    if now >= due:
                        batch, self._pending = self._pending, set()
                        return batch
                    self._cond.wait(due - now)
                else:
                    self._cond.wait(0.2)
        return None

    def run(self, stop: threading.Event | None = None) -> None:
        """Watch until ``stop`` is set (or Ctrl-C): events are queued first, then a full pass, then batches."""
        try:  # optional: the `watch` extra
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            raise MissingExtraError("watching folders needs watchdog: pip install 'mmretrieve[watch]'") from None

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # created, modified, moved, deleted, closed
                if event.event_type in ("opened", "closed_no_write") or (
                        event.is_directory and event.event_type == "modified"):  # a folder's own mtime
                    return
                watcher._event(event.src_path, getattr(event, "dest_path", ""))

        stop = stop or threading.Event()
        observer = Observer()
        for root in self.roots:
            observer.schedule(Handler(), root, recursive=True)
        observer.start()
        try:
            self._report(sync_folders(self.retriever, self.roots, self.config))
            while (batch := self._take_batch(stop)) is not None:
                self._report(apply_changes(self.retriever, batch, self.roots, self.config))
        finally:
            observer.stop()
            observer.join(10)

    def _report(self, report: SyncReport) -> None:
        if self.on_batch is not None:
            self.on_batch(report)
