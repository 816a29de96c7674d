"""UnifiedIndex: vectors of every modality in one faiss inner-product space, plus SQLite metadata.

Storage design (one directory; see layout.py, store.py, vectors.py, rerank.py):
- meta.sqlite (WAL) is the source of truth for metadata AND vectors (one float32 blob per row, or
  float16 with vector_dtype="float16"). Every
  add / replace_path / remove, or every batch() of them, is ONE transaction that also bumps a
  generation counter. A process killed at any moment leaves the last committed transaction, so
  batch indexing resumes from file_state() with at most one batch redone, and nothing is duplicated.
- vectors.faiss is a derived cache (IndexIDMap2 over the factory string) tagged with the generation
  and database uuid it reflects, written atomically (temp file, fsync, os.replace). When stale it is
  caught up from the database (rows with gen > cached, tombstones of removed ids), when missing or
  from another database it is rebuilt (trainable factories are trained on the stored vectors).
- rerank.vec (approximate structures) is a second derived cache: the vectors by id, float16 by
  default, memory-mapped; candidates are re-scored from it without SQL. Ids are never reused and
  stored vectors never change, so an older file is right for every id it holds; newer ids are read
  from the database until save() extends it (see rerank.py).
- Readers (readonly=True) take no lock and write nothing; each search runs inside one SQLite read
  transaction and first catches the in-memory faiss index up to that snapshot, so a reader sees
  exactly one committed state even while a writer in another process is adding.
- One writer at a time: an exclusive flock on writer.lock -> IndexLockedError for a second writer.
- Nothing is unpickled: JSON, SQLite, and faiss's own format behind a length + sha256 check.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import uuid as uuidlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import faiss
import numpy as np

from ..errors import EncoderMismatchError, IndexCorruptError, IndexReadOnlyError, MMRError
from ..modality import Modality
from .filters import build_filter
from .layout import (CACHE_NAME, MANIFEST_NAME, OLD_TAG, TMP_TAG, fsync_dir, read_manifest,
                     recover_interrupted_save, remove_dead_temp_files, sibling_name, write_manifest)
from .locking import WriterLock
from .fingerprint import canonical_fingerprint, fingerprint_difference
from .health import CacheCheck, IndexCheck
from .records import Hit, Record, as_vectors, hit_from_row, record_row, to_float32
from .rerank import (RERANK_NAME, RerankTable, build_rerank_table, open_rerank, rerank_digest,
                     write_rerank)
from .store import DB_NAME, MetadataStore, is_corruption
from .tuning import (AUTO, TUNE_K, TUNE_SEED, ExactTopK, Plan, TuningConfig, apply_search_params, candidate_structures,
                     exact_codes, initial_plan, offset_queries, plan_fields, tune_structure)
from .vectors import (TRAIN_SAMPLE, IdFilter, IndexTrainingError, make_faiss_index, read_cache, remove_ids,
                      search_index, train_index, validate_factory, write_cache)

_log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called while a structure is trained, filled and tuned."""
_FILTER_MEMO = 32  # filters remembered per generation (each a bitmap of max_id bits)
_RERANK_ROWS = 64  # queries re-ranked per block (bounds the candidate matrix in memory)

__all__ = ["UnifiedIndex", "IndexReadOnlyError"]


@contextlib.contextmanager
def _corruption_guard(location: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            raise IndexCorruptError(f"{location}: {exc}") from None
        raise


def _served_seconds(served: Callable[[np.ndarray, int], Any], queries: np.ndarray) -> float:
    """Best of three timings of the served search, one query at a time (how tuned settings compare)."""
    sample = queries[:50]
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(len(sample)):
            served(sample[i:i + 1], TUNE_K)
        best = min(best, time.perf_counter() - t0)
    return best


def _counts(by_modality: Mapping[str, int]) -> dict[str, int]:
    out = {"total": int(sum(by_modality.values()))}
    out.update({m.value: int(by_modality.get(m.value, 0)) for m in Modality})
    return out


class UnifiedIndex:
    """A persistent (or in-memory) multimodal vector index. Use create() or open(), not __init__."""

    def __init__(self, *, store: MetadataStore, dim: int, factory: str, fingerprint: dict,
                 path: str | None, readonly: bool, lock: WriterLock | None):
        self.dim = dim
        self.factory = factory
        tuning_text, plan_text = store.get_meta("tuning"), store.get_meta("plan")
        try:
            self._tuning = TuningConfig.from_json(tuning_text)
            # an index written before plans existed keeps its recorded factory (tuned only on request)
            self._plan = Plan.from_json(plan_text) if plan_text else initial_plan(factory, self._tuning)
        except (ValueError, TypeError):
            raise IndexCorruptError(f"{store.location}: meta 'tuning' / 'plan' entries are damaged") from None
        self._plan_text = plan_text
        self._memo_gen, self._memo_count = -1, None  # generation the filter id sets reflect, count
        self._memo: dict[tuple, list] = {}  # filter key -> [sorted matching ids, sql filter, IdFilter or None]
        self.fingerprint = fingerprint
        self.path = path
        self.readonly = readonly
        self._store = store
        self._lock = lock
        self._mutex = threading.RLock()
        self._faiss: faiss.IndexIDMap2 | None = None
        self._faiss_gen = -1
        self._rerank: RerankTable | None = None  # vectors by id for re-ranking (rerank.vec, mapped)
        self._cache_gen = -1  # generation of the cache file on disk (writer)
        self._dir = path  # the directory actually read (an interrupted save's old copy for readers)
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, dim: int, fingerprint: dict, *, factory: str = AUTO,
               path: str | os.PathLike | None = None, tuning: TuningConfig | None = None,
               vector_dtype: str = "float32") -> "UnifiedIndex":
        """A new empty index; on disk at `path` (a new or empty directory) or in memory (path=None).

        factory: "auto" (exact Flat while small, then an approximate structure chosen from the count,
        the dimension and ``tuning.max_memory``, tuned to ``tuning.target_recall``) or any faiss
        factory string (tuned too unless ``tuning.tune`` is False). vector_dtype: precision the
        vectors are stored in ("float32", or "float16": half the bytes on disk, every stored vector
        and so every score rounded to float16; exact search is exact over the rounded vectors)."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim={dim!r} must be a positive int")
        fingerprint = canonical_fingerprint(fingerprint)
        if factory != AUTO:
            validate_factory(dim, factory)
        tuning = tuning if tuning is not None else TuningConfig()
        token = uuidlib.uuid4().hex
        if path is None:
            store = MetadataStore.create(None, dim=dim, factory=factory, fingerprint=fingerprint, uuid=token,
                                         vector_dtype=vector_dtype)
            cls._record_tuning(store, factory, tuning)
            return cls(store=store, dim=dim, factory=factory, fingerprint=fingerprint, path=None,
                       readonly=False, lock=None)
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if os.path.isfile(os.path.join(target, MANIFEST_NAME)):
            raise FileExistsError(f"{target} is already an mmretrieve index; use UnifiedIndex.open()")
        if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
            raise FileExistsError(f"{target} exists and is not an empty directory; choose a new path")
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = sibling_name(target, TMP_TAG)
        os.mkdir(tmp)
        try:
            store = MetadataStore.create(os.path.join(tmp, DB_NAME), dim=dim, factory=factory,
                                         fingerprint=fingerprint, uuid=token, vector_dtype=vector_dtype)
            cls._record_tuning(store, factory, tuning)
            store.close()
            write_manifest(tmp, dim=dim, factory=factory, fingerprint=fingerprint)
            fsync_dir(tmp)
            os.rename(tmp, target)  # also replaces an empty directory
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(target)

    @staticmethod
    def _record_tuning(store: MetadataStore, factory: str, tuning: TuningConfig) -> None:
        with store.transaction(bump=False):
            store.put_meta("tuning", tuning.to_json())
            store.put_meta("plan", initial_plan(factory, tuning).to_json())

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False, load_cache: bool = True) -> "UnifiedIndex":
        """Open an index directory. Writers take the lock (IndexLockedError if held) and finish an
        interrupted save; readonly opens never lock and never write. Damage -> IndexCorruptError.
        ``load_cache=False`` leaves vectors.faiss unread (rebuilt from the database when first
        needed), so check() can report a damaged cache and repair() set it aside."""
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not readonly and os.path.isfile(os.path.join(target, MANIFEST_NAME)):
            lock: WriterLock | None = WriterLock(target)
            lock.acquire()  # before touching anything
        else:
            lock = None
        store = None
        try:
            where = recover_interrupted_save(target, write=not readonly)
            if where is None:
                read_manifest(target)  # raises the precise IndexCorruptError
                where = target
            if not readonly and lock is None:
                lock = WriterLock(where)
                lock.acquire()
            if not readonly:
                remove_dead_temp_files(where)  # a cache write cut short by a kill (up to GBs for rerank.vec)
            manifest = read_manifest(where)
            store = MetadataStore.connect(os.path.join(where, DB_NAME), readonly=readonly)
            with _corruption_guard(store.location):
                meta = store.meta()
                try:
                    db_fp = json.loads(meta.get("fingerprint", ""))
                    db_dim = int(meta.get("dim", ""))
                except ValueError:
                    raise IndexCorruptError(f"{store.location}: meta table is damaged") from None
            if db_dim != manifest["dim"] or meta.get("factory") != manifest["factory"] \
                    or db_fp != manifest["fingerprint"]:
                raise IndexCorruptError(
                    f"{os.path.join(where, MANIFEST_NAME)}: disagrees with {DB_NAME} on dim, factory or "
                    "fingerprint (edited or mixed from two indexes)")
            index = cls(store=store, dim=db_dim, factory=manifest["factory"], fingerprint=db_fp,
                        path=target, readonly=readonly, lock=lock)
            index._dir = where
            if load_cache:
                index._load_cache(os.path.join(where, CACHE_NAME), meta.get("uuid", ""))
                index._load_rerank(where, meta.get("uuid", ""))
            return index
        except BaseException:
            if store is not None:
                store.close()
            if lock is not None:
                lock.release()
            raise

    def _load_cache(self, cache_path: str, db_uuid: str) -> None:
        if not os.path.exists(cache_path):
            return
        index, header = read_cache(cache_path, dim=self.dim, factory=None)
        with self._mutex, self._store.snapshot(), _corruption_guard(self._store.location):
            gen = self._store.generation()
        if header["factory"] != self._plan.structure:
            return  # built for another plan (a re-choice in progress or interrupted): rebuild on demand
        if header.get("uuid") != db_uuid or not isinstance(header.get("generation"), int) \
                or header["generation"] > gen:
            return  # a cache of another database or of a newer state: ignore, rebuild on demand
        apply_search_params(index, self._plan, self._tuning.tune)
        self._faiss, self._faiss_gen = index, header["generation"]
        self._cache_gen = header["generation"]

    def _load_rerank(self, directory: str, db_uuid: str) -> None:
        """Map rerank.vec when it belongs to this database and the plan re-ranks in its precision."""
        self._rerank = None
        path = os.path.join(directory, RERANK_NAME)
        if self._plan.exact or self._plan.rerank <= 0 or not os.path.exists(path):
            return
        table = open_rerank(path, dim=self.dim)
        with self._mutex, self._store.snapshot(), _corruption_guard(self._store.location):
            gen = self._store.generation()
        if table.uuid == db_uuid and table.generation <= gen and table.dtype == self._plan.rerank_dtype:
            self._rerank = table

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"index {self.path or '<in-memory>'} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise IndexReadOnlyError(f"index {self.path} was opened with readonly=True; open it without "
                                     "readonly to modify it")

    def _rows(self, records: Sequence[Record], path: str | None = None) -> list[tuple]:
        rows = [record_row(r, i) for i, r in enumerate(records)]
        if path is not None:
            for i, row in enumerate(rows):
                if row[0] != path:
                    raise ValueError(f"records[{i}].path={row[0]!r} differs from replace_path({path!r})")
        return rows

    # ------------------------------------------------------------------ fingerprint
    def check_fingerprint(self, fingerprint: dict) -> None:
        """EncoderMismatchError listing the keys where `fingerprint` differs from the index's."""
        details = fingerprint_difference(fingerprint, self.fingerprint)
        if details:
            raise EncoderMismatchError(
                f"index {self.path or '<in-memory>'} was built with a different encoder; differing keys: "
                f"{details}. Use the encoder that built it, or build a new index")

    # ------------------------------------------------------------------ writes
    @contextlib.contextmanager
    def batch(self) -> Iterator["UnifiedIndex"]:
        """Group several add/replace_path/remove calls into ONE transaction (all or nothing)."""
        self._check_writable()
        with self._mutex, _corruption_guard(self._store.location), self._store.transaction():
            yield self
        self._after_commit()

    def add(self, vectors: Any, records: Sequence[Record]) -> list[int]:
        """Store N vectors with their records in one transaction; returns the new int64 ids."""
        self._check_writable()
        records = list(records)
        arr = as_vectors(vectors, self.dim, len(records))
        rows = self._rows(records)
        if not rows:
            return []
        with self._mutex, _corruption_guard(self._store.location), self._store.transaction():
            new_ids = self._store.insert(rows, arr)
        self._after_commit()
        return new_ids

    def replace_path(self, path: str | os.PathLike, vectors: Any, records: Sequence[Record]) -> list[int]:
        """Upsert a file: drop every row of `path` and add the new ones, in one transaction."""
        self._check_writable()
        path = os.fspath(path)
        records = list(records)
        arr = as_vectors(vectors, self.dim, len(records))
        rows = self._rows(records, path)
        with self._mutex, _corruption_guard(self._store.location), self._store.transaction():
            self._store.delete(self._store.ids_for_path(path))
            new_ids = self._store.insert(rows, arr) if rows else []
        self._after_commit()
        return new_ids

    def remove(self, ids: Any) -> int:
        """Remove rows by id; returns how many existed."""
        self._check_writable()
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        if not ids:
            return 0
        with self._mutex, _corruption_guard(self._store.location), self._store.transaction():
            return self._store.delete(ids)

    def remove_path(self, path: str | os.PathLike) -> int:
        """Remove every row of a file; returns how many."""
        self._check_writable()
        with self._mutex, _corruption_guard(self._store.location), self._store.transaction():
            return self._store.delete(self._store.ids_for_path(os.fspath(path)))

    # ------------------------------------------------------------------ reads
    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """Serialise threads and run the body inside one SQLite read snapshot."""
        self._check_open()
        with self._mutex, _corruption_guard(self._store.location), self._store.snapshot():
            yield

    def file_state(self, path: str | os.PathLike) -> tuple[str | None, float | None, int | None] | None:
        """(content_hash, mtime, size) recorded for a file, or None if it is not indexed."""
        with self._read():
            return self._store.file_state(os.fspath(path))

    def paths(self) -> list[str]:
        with self._read():
            return self._store.paths()

    def __len__(self) -> int:
        with self._read():
            return self._store.count()

    def count(self, modality: Any = None) -> int:
        with self._read():
            return self._store.count(build_filter(modality))

    def stats(self) -> dict:
        """{"total": n, "text": n, "image": n, "video": n, "audio": n}."""
        with self._read():
            return _counts(self._store.counts_by_modality())

    @property
    def generation(self) -> int:
        """Number of committed write transactions (changes whenever the content changes)."""
        with self._read():
            return self._store.generation()

    def get(self, ids: Any) -> list[Hit]:
        """Stored entries by id, in the given order (score NaN); KeyError for unknown ids."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        with self._read():
            rows = self._store.hit_rows(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KeyError(f"ids not in index {self.path or '<in-memory>'}: {missing[:10]}")
        return [hit_from_row(rows[i], math.nan) for i in ids]

    def entries(self, path: str | os.PathLike) -> list[Hit]:
        """Stored entries of one file (score NaN) in the order they were written (window order);
        [] when it is not indexed."""
        with self._read():
            rows = self._store.path_rows(os.fspath(path))
        return [hit_from_row(r, math.nan) for r in rows]

    def iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every live entry, read from one consistent snapshot."""
        with self._read():
            yield from self._store.iter_vectors(self.dim, chunk=chunk)

    def vectors(self, ids: Any) -> np.ndarray:
        """(len(ids), dim) float32 stored vectors, in the given order; KeyError for unknown ids."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        with self._read():
            got = self._store.vectors_by_id(ids, self.dim)
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"ids not in index {self.path or '<in-memory>'}: {missing[:10]}")
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([got[i] for i in ids]).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ structure (plan)
    @property
    def vector_dtype(self) -> str:
        """Precision the vectors are stored in: "float32" or "float16"."""
        return self._store.vector_dtype

    @property
    def tuning(self) -> TuningConfig:
        """How this index chooses and tunes its faiss structure."""
        return self._tuning

    @property
    def plan(self) -> Plan:
        """The structure search runs on, its tuned parameters and the recall it was tuned to."""
        with self._read():
            self._sync_plan(self._store.get_meta("plan"))
            return self._plan

    def structure(self) -> dict:
        """What search runs on: structure, exact or not, search parameters, tuned recall, note."""
        plan = self.plan
        params = {k: v for k, v in (("nprobe", plan.nprobe), ("efSearch", plan.ef_search),
                                    ("rerank", plan.rerank if not plan.exact else 0)) if v}
        return {"factory": self.factory, "structure": plan.structure, "exact": plan.exact, "params": params,
                "recall": plan.recall, "target": plan.target, "fallback": plan.fallback,
                "chosen_at": plan.count, "next_at": plan.next_at, "note": plan.note,
                "description": plan.describe()}

    def _sync_plan(self, text: str | None) -> None:
        """A reader follows the stored plan ``text`` when the writer switched to another (loading its
        cache when already written)."""
        if not self.readonly:
            return
        if text is None or text == self._plan_text:
            return
        self._plan, self._plan_text = Plan.from_json(text), text
        self._faiss, self._faiss_gen, self._rerank = None, -1, None
        if self._dir is not None:
            with contextlib.suppress(IndexCorruptError):
                self._load_cache(os.path.join(self._dir, CACHE_NAME), self._store.meta().get("uuid", ""))
            with contextlib.suppress(IndexCorruptError):
                self._load_rerank(self._dir, self._store.meta().get("uuid", ""))

    # ------------------------------------------------------------------ faiss side
    def _build(self, store: MetadataStore, plan: Plan, progress: Progress | None = None,
               truth: ExactTopK | None = None) -> faiss.IndexIDMap2:
        """The plan's structure filled with every stored vector of ``store`` (trained on a sample
        first if needed); ``truth`` also sees every vector (exact ground truth in the same pass)."""
        index = make_faiss_index(self.dim, plan.structure)
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexIVFPQ):
            inner.do_polysemous_training = False  # slow, and its Hamming filter is never used here
        total = store.count()
        if not index.is_trained:
            ids = store.all_ids()
            if len(ids) == 0:
                return index
            try:
                want = max(64 * faiss.extract_index_ivf(index).nlist, 20_000)
            except RuntimeError:
                want = TRAIN_SAMPLE
            want = min(want, TRAIN_SAMPLE)
            if len(ids) > want:
                ids = ids[np.linspace(0, len(ids) - 1, want).astype(np.int64)]
            if progress:
                progress(f"train {plan.structure}", 0, len(ids))
            sample = np.concatenate([v for _, v in store.iter_vectors(self.dim, ids=ids)])
            train_index(index, sample, plan.structure)
            del sample
        done = 0
        for ids, vecs in store.iter_vectors(self.dim):
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            index.add_with_ids(vecs, ids)
            if truth is not None:
                truth.update(ids, vecs)
            done += len(ids)
            if progress:
                progress(f"add {plan.structure}", done, total)
        apply_search_params(index, plan, self._tuning.tune)
        return index

    def _rebuild(self) -> None:
        """Build the faiss index of the current plan from every stored vector (no re-tuning)."""
        gen = self._store.generation()
        self._faiss, self._faiss_gen = self._build(self._store, self._plan), gen

    def _ensure_faiss(self, state: tuple[int, str | None] | None = None) -> faiss.IndexIDMap2:
        """Bring the in-memory faiss index to the generation of the current (read) transaction;
        ``state``: (generation, stored plan) when the caller has just read them."""
        gen, plan_text = state if state is not None else self._store.generation_and_meta("plan")
        self._sync_plan(plan_text)
        if self._faiss is not None and self._faiss_gen == gen:
            return self._faiss
        if self._faiss is None or self._faiss_gen > gen or not self._faiss.is_trained:
            self._rebuild()
        else:
            if not remove_ids(self._faiss, self._store.removed_since(self._faiss_gen)):
                self._rebuild()
            else:
                for ids, vecs in self._store.iter_vectors(self.dim, since_gen=self._faiss_gen):
                    self._faiss.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
                self._faiss_gen = gen
        if self._faiss.ntotal != self._store.count():
            self._rebuild()  # cache disagreed with the database (should not happen): trust the database
        return self._faiss

    def rebuild(self) -> None:
        """Rebuild the faiss index from the stored vectors (e.g. after changing faiss parameters);
        the next save() writes it to the cache file."""
        with self._read():
            self._rebuild()
            self._cache_gen = -1

    # ------------------------------------------------------------------ choosing and tuning
    def _choose(self, store: MetadataStore, progress: Progress | None,
                table_for: Callable[[MetadataStore], RerankTable | None]
                ) -> tuple[Plan, faiss.IndexIDMap2, RerankTable | None]:
        """Choose (auto) and tune the structure for the content of ``store``; build it. ``table_for``
        gives the re-rank table of ``store``'s snapshot, asked for only when candidates are tuned."""
        plan, index, table = self._choose_plan(store, progress, table_for)
        return plan, index, table if not plan.exact and plan.rerank > 0 else None

    def _choose_plan(self, store: MetadataStore, progress: Progress | None,
                     table_for: Callable[[MetadataStore], RerankTable | None]
                     ) -> tuple[Plan, faiss.IndexIDMap2, RerankTable | None]:
        cfg = self._tuning
        n = store.count()
        growth_at = max(int(n * cfg.growth), n + 1)
        if self.factory == AUTO and n < cfg.flat_below:
            plan = Plan("Flat", count=n, next_at=max(cfg.flat_below, 1), note="exact while small")
            return plan, self._build(store, plan, progress), None
        if self.factory != AUTO and (not cfg.tune or self.factory.strip() == "Flat"):
            plan = dataclasses.replace(initial_plan(self.factory, cfg), count=n, next_at=None)
            table = table_for(store) if not plan.exact and plan.rerank > 0 else None
            return plan, self._build(store, plan, progress), table
        if self.factory == AUTO:
            candidates = candidate_structures(n, self.dim, cfg.max_memory)
        else:
            candidates = [self.factory]
        ids = store.all_ids()
        rng = np.random.default_rng(0)
        qids = rng.choice(ids, size=min(2 * cfg.queries, len(ids)), replace=False)  # tune + held-out halves
        base = store.vectors_by_id(qids.tolist(), self.dim)
        # the noise must not share a random stream with the data (seed 0 drew the cluster centres of
        # the generated test data: queries pointing at centres made tuning look easier than serving)
        queries = offset_queries(np.stack([base[int(i)] for i in qids]).astype(np.float32), seed=TUNE_SEED)
        truth: np.ndarray | None = None
        failures: list[str] = []
        table = table_for(store) if cfg.rerank > 0 and not all(map(exact_codes, candidates)) else None

        for structure in candidates:
            # re-rank depths tried: deeper re-ranking lets coarser codes / fewer lists reach the target
            depths = [cfg.rerank * m for m in (1, 2, 4, 8)] if cfg.rerank > 0 and not exact_codes(structure) else [0]
            exact = ExactTopK(queries, TUNE_K) if truth is None else None
            try:
                index = self._build(store, Plan(structure, count=n), progress, exact)
            except IndexTrainingError as exc:
                failures.append(f"{structure} cannot be trained ({exc})")
                continue
            if exact is not None:
                truth = exact.result()
            best: tuple[float, Plan] | None = None
            reached = 0.0
            for step, depth in enumerate(depths):
                if progress:
                    progress(f"tune {structure}", step, len(depths))
                trial = Plan(structure, rerank=depth, rerank_dtype=cfg.rerank_dtype, target=cfg.target_recall,
                             count=n)

                def served(q: np.ndarray, k: int, index: faiss.IndexIDMap2 = index,
                           trial: Plan = trial) -> tuple[np.ndarray, np.ndarray]:
                    return self._served(index, q, k, None, trial,
                                        lambda want: self._rerank_vectors(store, table, trial.rerank_dtype, want))

                name, value, recall = tune_structure(index, queries, truth, cfg.target_recall, served)
                reached = max(reached, recall)
                if value is None:
                    continue
                candidate = dataclasses.replace(trial, recall=round(recall, 4), next_at=growth_at,
                                                **plan_fields(name, value))
                apply_search_params(index, candidate, True)
                cost = _served_seconds(served, queries)
                if best is None or cost < best[0]:
                    best = (cost, candidate)
                if value <= 1 or depth == 0:
                    break  # a deeper re-rank cannot search fewer lists
            if best is not None:
                plan = dataclasses.replace(best[1], note="; ".join(
                    (["chosen by auto"] if self.factory == AUTO else []) + failures))
                apply_search_params(index, plan, True)
                return plan, index, table
            failures.append(f"{structure} reached recall@10 {reached:.3f} < target {cfg.target_recall:.2f} "
                            f"even at its largest {name}" + (f" and re-rank x{depths[-1]}" if depths[-1] else ""))
            del index
        if not candidates:
            failures.append(f"no approximate structure fits max_memory={cfg.max_memory} for {n} vectors of dim {self.dim}")
        note = "fallback to exact search: " + "; ".join(failures)
        _log.warning("index %s: %s", self.path or "<in-memory>", note)
        plan = Plan("Flat", recall=1.0, target=cfg.target_recall, count=n, next_at=growth_at, fallback=True, note=note)
        return plan, self._build(store, plan, progress), None

    def optimize(self, *, progress: Progress | None = None, tuning: TuningConfig | None = None) -> Plan:
        """Choose (``auto``) and tune the structure for the current content and switch to it.

        The new structure is built from a separate read snapshot while the current one keeps
        serving; it replaces it (cache file first, then the plan in the database) only once it is
        complete, so an interruption (Ctrl-C, kill) leaves the previous structure in place.
        ``tuning`` replaces the stored tuning settings (target recall, memory budget) from now on."""
        self._check_writable()
        previous = self._tuning
        if tuning is not None:
            self._tuning = tuning
        try:
            return self._optimize(progress)
        except BaseException:
            self._tuning = previous
            raise

    def _optimize(self, progress: Progress | None) -> Plan:
        dtype = self._tuning.rerank_dtype
        if self.path is None:
            with self._read():
                gen = self._store.generation()
                uuid = self._store.meta()["uuid"]
                plan, index, table = self._choose(
                    self._store, progress, lambda st: self._refresh_rerank(st, dtype, None, uuid))
        else:
            reader = MetadataStore.connect(os.path.join(self._dir, DB_NAME), readonly=True)
            try:
                with _corruption_guard(reader.location), reader.snapshot():
                    gen = reader.generation()
                    uuid = reader.meta()["uuid"]
                    # rerank.vec is valid for any plan (vectors by id), so it is written before the switch
                    plan, index, table = self._choose(
                        reader, progress, lambda st: self._refresh_rerank(st, dtype, self.path, uuid))
            finally:
                reader.close()
        with self._mutex, _corruption_guard(self._store.location):
            if self.path is not None:
                write_cache(os.path.join(self.path, CACHE_NAME), index, generation=gen,
                            uuid=uuid, dim=self.dim, factory=plan.structure)
            text = plan.to_json()
            with self._store.transaction(bump=False):
                self._store.put_meta("plan", text)
                self._store.put_meta("tuning", self._tuning.to_json())
            self._plan, self._plan_text = plan, text
            self._faiss, self._faiss_gen, self._rerank = index, gen, table
            self._cache_gen = gen if self.path is not None else -1
            if table is None and self.path is not None:  # an exact plan keeps no re-rank copy
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.path, RERANK_NAME))
        _log.info("index %s: %s", self.path or "<in-memory>", plan.describe())
        return plan

    def _after_commit(self) -> None:
        """Re-choose the structure once the index has grown past the plan's next threshold."""
        next_at = self._plan.next_at
        if next_at is None or self._store.in_transaction or self._store.max_id() < next_at:
            return
        if len(self) >= next_at:
            try:
                self.optimize()
            except (MMRError, OSError, MemoryError, RuntimeError, sqlite3.Error) as exc:
                # the commit itself succeeded; the current structure keeps serving
                _log.warning("index %s: re-choosing the structure failed (%s); the current one keeps serving, "
                             "retried on the next commit or by `mmretrieve optimize`", self.path or "<in-memory>", exc)

    # ------------------------------------------------------------------ search
    def _matching(self, sql_filter: tuple[str, list] | None, gen: int) -> tuple[int, IdFilter | None]:
        """(entries in the index, the ids matching the filter or None for all) at generation ``gen``.
        The id set of each filter seen is kept and carried across writes: a new generation adds the
        matching rows written since (found through the generation column's index) and drops the
        removed ids, so only the first use of a filter in a process scans the metadata."""
        if self._memo_gen != gen:
            self._advance_memo(gen)
        if self._memo_count is None:
            self._memo_count = self._store.count()
        total = self._memo_count
        if sql_filter is None:
            return total, None
        key = (sql_filter[0], tuple(sql_filter[1]))
        entry = self._memo.get(key)
        if entry is None:
            if len(self._memo) >= _FILTER_MEMO:
                self._memo.pop(next(iter(self._memo)))  # the oldest filter
            entry = [self._store.filtered_ids(sql_filter), sql_filter, None]
            self._memo[key] = entry
        ids = entry[0]
        if len(ids) == total:
            return total, None
        if entry[2] is None:
            entry[2] = IdFilter(ids)
        return total, entry[2]

    def _advance_memo(self, gen: int) -> None:
        old = self._memo_gen
        self._memo_gen, self._memo_count = gen, None
        if old < 0 or old > gen or not self._memo:
            self._memo = {}
            return
        removed = np.unique(self._store.removed_since(old))
        for entry in self._memo.values():
            ids, sql_filter = entry[0], entry[1]
            if len(removed):
                ids = ids[~np.isin(ids, removed, assume_unique=True)]
            added = self._store.filtered_ids(sql_filter, since_gen=old)
            if len(added):  # ids only grow: rows written since are past every id already held
                ids = np.concatenate([ids, added]) if not len(ids) or added[0] > ids[-1] else np.union1d(ids, added)
            entry[0], entry[2] = ids, None

    def _rerank_vectors(self, store: MetadataStore, table: RerankTable | None, dtype: str,
                        want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their float32 vectors in ``dtype`` precision) for unique candidate ids: rows the
        re-rank table holds come from its mapping (in the order given), newer ids from the database
        (after them, ascending). Sorted ids in, sorted ids out."""
        if table is not None and table.dtype == dtype:
            held = want < table.rows
            if held.all():
                return want, table.matrix(want)
            inside, outside = want[held], want[~held]
            matrix = table.matrix(inside)
            found, extra = store.vectors_matrix(np.sort(outside), self.dim)
            return np.concatenate([inside, found]), np.concatenate([matrix, table.rounded(extra)])
        found, matrix = store.vectors_matrix(want, self.dim)
        if dtype != "float32":
            matrix = to_float32(matrix.astype(np.float16))
        return found, matrix

    def _refresh_rerank(self, store: MetadataStore, dtype: str, directory: str | None, uuid: str, *,
                        source: RerankTable | None = None) -> RerankTable:
        """A re-rank table holding every id of ``store``'s snapshot: ``source`` (default: the current
        table) when it already does, else extended with the newer rows (written atomically to
        ``directory``/rerank.vec and mapped, or built in memory when directory is None)."""
        gen, rows = store.generation(), store.max_id() + 1
        base = source if source is not None else self._rerank
        if base is not None and (base.dtype != dtype or base.generation > gen
                                 or (source is None and base.uuid != uuid)):
            base = None
        if base is not None and source is None and base.rows >= rows:
            return base
        if directory is None:
            return build_rerank_table(store.iter_vectors(self.dim), rows=rows, dim=self.dim, dtype=dtype,
                                      generation=gen, uuid=uuid)
        chunks = store.iter_vectors(self.dim) if base is None else store.iter_vectors(self.dim, since_gen=base.generation)
        path = os.path.join(directory, RERANK_NAME)
        write_rerank(path, chunks, rows=rows, dim=self.dim, dtype=dtype, generation=gen, uuid=uuid, base=base)
        return open_rerank(path, dim=self.dim)

    def _served(self, index: faiss.IndexIDMap2, q: np.ndarray, kk: int, ids: IdFilter | None, plan: Plan,
                lookup: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
                exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The served top-kk: faiss candidates, re-scored with exact vectors when the plan re-ranks."""
        if plan.exact or plan.rerank <= 0:
            return search_index(index, q, kk, ids, exhaustive=exhaustive)
        dist, lab = search_index(index, q, kk * plan.rerank, ids, exhaustive=exhaustive)
        if len(q) == 1:  # one query (the interactive case): its candidates are unique, score them as found
            found, matrix = lookup(lab[0][lab[0] >= 0])
            return self._rerank_one(q[0], found, matrix, kk)
        found, matrix = lookup(np.unique(lab[lab >= 0]))
        table = np.concatenate([matrix, np.zeros((1, self.dim), np.float32)])  # last row: padding
        pos = np.searchsorted(found, lab)
        present = (lab >= 0) & (pos < len(found))
        present[present] = found[pos[present]] == lab[present]
        pos = np.where(present, pos, len(found))
        out_d = np.full((len(q), kk), -np.inf, dtype=np.float32)
        out_l = np.full((len(q), kk), -1, dtype=np.int64)
        for lo in range(0, len(q), _RERANK_ROWS):
            p = pos[lo:lo + _RERANK_ROWS]
            scores = np.einsum("qd,qrd->qr", q[lo:lo + _RERANK_ROWS], table[p])
            scores[~present[lo:lo + _RERANK_ROWS]] = -np.inf
            order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
            s = np.take_along_axis(scores, order, axis=1)
            lbl = np.take_along_axis(lab[lo:lo + _RERANK_ROWS], order, axis=1)
            lbl[~np.isfinite(s)] = -1
            out_d[lo:lo + len(p), :s.shape[1]], out_l[lo:lo + len(p), :s.shape[1]] = s, lbl
        return out_d, out_l

    @staticmethod
    def _rerank_one(query: np.ndarray, found: np.ndarray, matrix: np.ndarray,
                    kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-kk of one query over the found candidates (ties: the order found), padded with -1."""
        scores = (matrix @ query).astype(np.float32, copy=False)
        order = np.argsort(-scores, kind="stable")[:kk]
        out_d = np.full((1, kk), -np.inf, dtype=np.float32)
        out_l = np.full((1, kk), -1, dtype=np.int64)
        out_d[0, :len(order)], out_l[0, :len(order)] = scores[order], found[order]
        return out_d, out_l

    def _exact(self, queries: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over the stored float32 vectors (all, or the given ids), streamed."""
        nq = len(queries)
        best_d = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((nq, 0), dtype=np.int64)
        source = self._store.iter_vectors(self.dim, ids=ids) if ids is not None \
            else self._store.iter_vectors(self.dim)
        for chunk_ids, vecs in source:
            scores = queries @ vecs.T
            d = np.concatenate([best_d, scores], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(chunk_ids, scores.shape)], axis=1)
            if d.shape[1] > k:
                part = np.argpartition(-d, k - 1, axis=1)[:, :k]
                d = np.take_along_axis(d, part, axis=1)
                i = np.take_along_axis(i, part, axis=1)
            best_d, best_i = d, i
        order = np.argsort(-best_d, axis=1, kind="stable")
        return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1)

    def search(self, queries: Any, k: int = 10, *, modality: Any = None,
               where: Mapping | None = None) -> list[list[Hit]]:
        """Top-k by inner product for each query row. modality: None, a modality or a sequence of
        them; where: {metadata key: value or list of values}. Filters are exact: k hits come back
        whenever k matching items exist, whatever the faiss factory."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k={k!r} must be a positive int")
        q = as_vectors(queries, self.dim, None, "queries")
        sql_filter = build_filter(modality, where)
        with self._read():
            state = self._store.generation_and_meta("plan")
            total, ids = self._matching(sql_filter, state[0])
            n_match = total if ids is None else len(ids)
            if n_match == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            kk = int(min(k, n_match))
            index = self._ensure_faiss(state)
            plan = self._plan
            table = self._rerank

            def lookup(want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return self._rerank_vectors(self._store, table, plan.rerank_dtype, want)

            try:
                dist, lab = self._served(index, q, kk, ids, plan, lookup)
            except RuntimeError:
                dist, lab = np.zeros((len(q), kk), np.float32), np.full((len(q), kk), -1, np.int64)
            short = np.nonzero((lab < 0).any(axis=1))[0]
            if len(short):  # approximate index missed filtered items: widen, then go exact
                try:
                    d2, l2 = self._served(index, q[short], kk, ids, plan, lookup, exhaustive=True)
                    dist[short], lab[short] = d2, l2
                except RuntimeError:
                    pass
                short = np.nonzero((lab < 0).any(axis=1))[0]
                if len(short):
                    d3, l3 = self._exact(q[short], kk, None if ids is None else ids.ids)
                    dist[short], lab[short] = d3, l3
            rows = self._store.hit_rows(np.unique(lab[lab >= 0]).tolist())
        return [[hit_from_row(rows[i], s) for s, i in zip(d_row, l_row) if i in rows]
                for d_row, l_row in zip(dist.tolist(), lab.tolist())]

    # ------------------------------------------------------------------ integrity
    def check(self) -> IndexCheck:
        """Counts, files and hashes, orphan / bad / duplicate rows, and how the vectors.faiss file on
        disk agrees with the database, all from one database snapshot."""
        with self._read():
            store = self._store
            generation = store.generation()
            item_ids = store.all_ids()
            bad = store.bad_vector_ids(self.dim)
            files, mixed = store.file_hashes()
            by_mod = store.counts_by_modality()
            data_gen = store.data_generation()
            check = IndexCheck(
                generation=generation, counts=_counts(by_mod), files=files,
                cache=self._check_derived(generation, item_ids, set(bad)),
                orphan_items=store.orphan_item_ids(), orphan_vectors=store.orphan_vector_ids(), bad_vectors=bad,
                duplicates=store.duplicate_ids(), mixed_files=mixed,
                generation_behind=data_gen if data_gen > generation else None)
        return check

    def _check_derived(self, generation: int, item_ids: np.ndarray, bad: set[int]) -> CacheCheck:
        """The faiss cache's check, with the re-rank file's defects folded in (both are derived caches
        of the stored vectors, set aside together by repair())."""
        cache = self._check_cache(generation, item_ids, bad)
        problem, mismatched = self._check_rerank(generation, item_ids, bad)
        if not problem and not mismatched:
            return cache
        status = "corrupt" if problem else cache.status
        detail = "; ".join(x for x in (cache.detail, problem) if x)
        if mismatched:
            detail = "; ".join(x for x in (detail, f"{RERANK_NAME}: {len(mismatched)} row(s) differ from the stored vectors") if x)
        return dataclasses.replace(cache, status=status, detail=detail,
                                   mismatched_ids=tuple(sorted(set(cache.mismatched_ids) | set(mismatched))))

    def _check_rerank(self, generation: int, item_ids: np.ndarray, bad: set[int]) -> tuple[str, tuple[int, ...]]:
        """(what is wrong with rerank.vec or "", ids whose row differs from the stored vector)."""
        if self.path is None:
            return "", ()
        path = os.path.join(self._dir, RERANK_NAME)
        if not os.path.exists(path):
            return "", ()
        try:
            header, intact = rerank_digest(path, dim=self.dim)
        except IndexCorruptError as exc:
            return str(exc), ()
        if not intact:
            return f"{path}: checksum mismatch (file altered or damaged)", ()
        if header["uuid"] != self._store.meta().get("uuid", ""):
            return "", ()  # another database's copy: ignored on open, rewritten on the next save
        if header["generation"] > generation:
            return f"{path}: claims generation {header['generation']}, newer than the database's {generation}", ()
        table = open_rerank(path, dim=self.dim)
        good = np.asarray([i for i in item_ids.tolist() if i not in bad and i < table.rows], dtype=np.int64)
        mismatched: list[int] = []
        for ids, vecs in self._store.iter_vectors(self.dim, ids=good):
            expected = np.asarray(vecs, dtype=table.data.dtype)
            differ = (np.asarray(table.data[ids]) != expected).any(axis=1)
            mismatched.extend(int(i) for i in ids[differ])
        return "", tuple(mismatched)

    def _check_cache(self, generation: int, item_ids: np.ndarray, bad: set[int]) -> CacheCheck:
        if self.path is None:
            return CacheCheck("missing", "an in-memory index keeps no cache file")
        cache_path = os.path.join(self._dir, CACHE_NAME)
        if not os.path.exists(cache_path):
            return CacheCheck("missing", "rebuilt from the database when the index is opened")
        try:
            index, header = read_cache(cache_path, dim=self.dim, factory=None)
        except IndexCorruptError as e:
            return CacheCheck("corrupt", str(e))
        gen = header.get("generation")
        if header.get("uuid") != self._store.meta().get("uuid", ""):
            return CacheCheck("foreign", "cache of another database (ignored and rebuilt on open)", gen, int(index.ntotal))
        if header["factory"] != self._plan.structure:
            return CacheCheck("stale", f"cache holds {header['factory']!r}, the plan serves {self._plan.structure!r}; "
                              "rebuilt on open", gen, int(index.ntotal))
        if not isinstance(gen, int) or gen > generation:
            return CacheCheck("corrupt", f"cache claims generation {gen!r}, newer than the database's {generation}",
                              None, int(index.ntotal))
        cached = faiss.vector_to_array(index.id_map).astype(np.int64)
        db = set(int(i) for i in item_ids)
        if len(set(cached.tolist())) != len(cached):
            return CacheCheck("corrupt", "duplicate ids inside the faiss cache", gen, int(index.ntotal))
        if gen < generation:
            # stale: a cached id may only be absent from SQLite if it was removed after the cache was written
            removed = set(int(i) for i in self._store.removed_since(gen))
            older = self._store.ids_up_to(gen)
            extra = tuple(sorted(i for i in cached.tolist() if i not in db and i not in removed))
            missing = tuple(sorted(older - set(cached.tolist())))
            status = "stale"
            detail = f"reflects generation {gen} of {generation}; caught up from the database on open"
        else:
            extra = tuple(sorted(set(cached.tolist()) - db))
            missing = tuple(sorted(db - set(cached.tolist())))
            status, detail = "ok", ""
        mismatched: list[int] = []
        if exact_codes(self._plan.structure) and index.ntotal:  # it keeps the vectors themselves: compare
            stored_vecs = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
            wanted = [int(i) for i in cached if int(i) in db and int(i) not in bad]
            pos = {int(i): n for n, i in enumerate(cached.tolist())}
            got = self._store.vectors_by_id(wanted, self.dim) if wanted else {}
            for i in wanted:
                if i in got and not np.array_equal(got[i], stored_vecs[pos[i]]):
                    mismatched.append(i)
        return CacheCheck(status, detail, gen, int(index.ntotal), missing, extra, tuple(mismatched))

    def repair(self, check: IndexCheck) -> list[str]:
        """Set a bad faiss cache aside, then drop orphan, bad and duplicate rows in one transaction;
        returns what was done. Re-embedding changed files is the caller's (it needs the encoder)."""
        self._check_writable()
        actions: list[str] = []
        if not check.cache.ok and self.path is not None:
            for name, what in ((CACHE_NAME, "faiss cache"), (RERANK_NAME, "re-rank file")):
                cache_path = os.path.join(self.path, name)
                if os.path.exists(cache_path):
                    aside = f"{cache_path}.bad-{int(time.time())}"
                    os.replace(cache_path, aside)
                    actions.append(f"moved the bad {what} aside to {aside}")
            with self._mutex:
                self._faiss, self._faiss_gen, self._cache_gen, self._rerank = None, -1, -1, None
        if check.generation_behind is not None:  # else a stale cache would skip rows on catch-up
            with self.batch():
                self._store.raise_generation(check.generation_behind)
            actions.append(f"moved the generation counter forward to {check.generation_behind}")
        drop = sorted(set(check.orphan_items) | set(check.bad_vectors) | set(check.duplicates))
        if drop or check.orphan_vectors:
            with self.batch():
                if drop:
                    self._store.delete(drop)  # item + vector rows, with tombstones for the cache
                if check.orphan_vectors:
                    self._store.delete_vector_rows(check.orphan_vectors)
            if drop:
                actions.append(f"removed {len(drop)} orphan/bad/duplicate row(s)")
            if check.orphan_vectors:
                actions.append(f"removed {len(check.orphan_vectors)} vector row(s) without metadata")
        return actions

    # ------------------------------------------------------------------ persistence
    def _write_cache(self, directory: str, uuid: str) -> int | None:
        """Write the faiss cache for the current snapshot into directory; None if untrainable yet."""
        try:
            index = self._ensure_faiss()
        except IndexTrainingError:
            return None
        write_cache(os.path.join(directory, CACHE_NAME), index, generation=self._faiss_gen, uuid=uuid,
                    dim=self.dim, factory=self._plan.structure)
        return self._faiss_gen

    def _reranks(self) -> bool:
        return not self._plan.exact and self._plan.rerank > 0

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Persist. No path (or the index's own path): write the faiss cache atomically (the database
        is already durable). Another path: write a full snapshot there atomically (temp dir, then
        rename; an existing index there is replaced, a crash leaves the previous one loadable). The
        index itself stays where it was (an in-memory index stays in memory)."""
        self._check_open()
        target = None if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))
        if target is None or target == self.path:
            if self.path is None:
                raise ValueError("this index is in memory: pass save(path) to write it to disk")
            self._check_writable()
            with self._mutex:  # the connection is shared: the checkpoint must not run inside a search
                with self._read():
                    uuid = self._store.meta()["uuid"]
                    if self._cache_gen != self._store.generation():
                        gen = self._write_cache(self.path, uuid)
                        if gen is not None:
                            self._cache_gen = gen
                    if self._reranks():
                        self._rerank = self._refresh_rerank(self._store, self._plan.rerank_dtype, self.path, uuid)
                self._store.checkpoint()
            return
        self._save_snapshot(target)

    def _save_snapshot(self, target: str) -> None:
        target_lock = None
        if os.path.exists(target):
            if not os.path.isfile(os.path.join(target, MANIFEST_NAME)):
                if os.path.isdir(target) and not os.listdir(target):
                    os.rmdir(target)
                else:
                    raise FileExistsError(
                        f"{target} exists and is not an mmretrieve index; refusing to overwrite it")
            else:
                target_lock = WriterLock(target)
                target_lock.acquire()  # IndexLockedError if someone is writing it
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = sibling_name(target, TMP_TAG)
        old = None
        try:
            os.mkdir(tmp)
            new_uuid = uuidlib.uuid4().hex
            db_path = os.path.join(tmp, DB_NAME)
            with self._read():
                self._store.backup_to(db_path, uuid=new_uuid)
                self._write_cache(tmp, new_uuid)
                if self._reranks():
                    current = self._rerank
                    own = current is not None and current.uuid == self._store.meta()["uuid"]
                    self._refresh_rerank(self._store, self._plan.rerank_dtype, tmp, new_uuid,
                                         source=current if own else None)
            with open(db_path, "rb+") as f:
                os.fsync(f.fileno())
            write_manifest(tmp, dim=self.dim, factory=self.factory, fingerprint=self.fingerprint)
            fsync_dir(tmp)
            parent = os.path.dirname(target)
            if target_lock is not None:
                old = sibling_name(target, OLD_TAG)
                os.rename(target, old)
            os.rename(tmp, target)  # the commit point
            fsync_dir(parent)
        except BaseException:
            if old is not None and not os.path.exists(target) and os.path.isdir(old):
                with contextlib.suppress(OSError):
                    os.rename(old, target)  # undo in-process; after a hard crash open() does this
                    old = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if target_lock is not None:
                target_lock.release()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        """Write the faiss cache if it is stale (writer), release the lock, close the database."""
        if self._closed:
            return
        try:
            if not self.readonly and self.path is not None:
                try:
                    self.save()
                except (MMRError, OSError, sqlite3.Error):
                    pass  # the database is the source of truth; the cache is rebuilt on open
        finally:
            with self._mutex:  # not while another thread is inside a search
                self._closed = True
                self._store.close()
                if self._lock is not None:
                    self._lock.release()
                self._faiss, self._rerank = None, None

    def __enter__(self) -> "UnifiedIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path or "<in-memory>"
        mode = "readonly" if self.readonly else "writer"
        return (f"UnifiedIndex({where!r}, dim={self.dim}, factory={self.factory!r}, "
                f"structure={self._plan.structure!r}, {mode})")
