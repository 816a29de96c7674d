"""SQLite metadata store: the source of truth of an index (rows, user metadata AND vectors).

Tables
  meta(key, value)        schema_version, dim, factory, fingerprint (JSON), uuid, vector_dtype
                          ("float32" default / absent, or "float16": half the bytes per stored vector)
  state(generation)       bumped once per write transaction; the faiss cache records the generation
                          it reflects and catches up from here
  items(id, gen, path, modality, seg_start, seg_end, content_hash, mtime, size, metadata JSON)
  vectors(id, vector)     little-endian float32 (4*dim bytes) or float16 (2*dim) blob, same id as
                          items; read back as float32 either way
  removed(id, gen)        tombstones, so a stale faiss cache can drop removed ids without a rebuild

WAL journal (readers in other processes see only committed transactions and never block the
writer), synchronous=FULL (a committed batch survives a crash), parameterised SQL only.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
from typing import Iterator, Sequence

import numpy as np

from ..errors import IndexCorruptError
from .records import to_float32

__all__ = ["MetadataStore", "SCHEMA_VERSION", "DB_NAME", "VECTOR_DTYPES"]

SCHEMA_VERSION = 1
DB_NAME = "meta.sqlite"
_CHUNK = 50_000
_FEW = 256  # id lists up to this long are bound as parameters
PAGE_SIZE = 65536  # a 4*dim-byte vector row no longer takes a 4 KB page of its own (dim 512: 31 rows/page)
_MMAP_SIZE = 1 << 40
VECTOR_DTYPES = {"float32": "<f4", "float16": "<f2"}  # read pages through the OS page cache without copying

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE state (one INTEGER PRIMARY KEY CHECK (one = 0), generation INTEGER NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gen INTEGER NOT NULL,
    path TEXT,
    modality TEXT NOT NULL CHECK (modality IN ('text', 'image', 'video', 'audio')),
    seg_start REAL,
    seg_end REAL,
    content_hash TEXT,
    mtime REAL,
    size INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX items_path ON items (path);
CREATE INDEX items_modality ON items (modality);
CREATE INDEX items_gen ON items (gen);
CREATE TABLE vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE removed (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX removed_gen ON removed (gen);
"""

_HIT_COLUMNS = "id, path, modality, seg_start, seg_end, metadata"


def _is_corruption(exc: BaseException) -> bool:
    return type(exc) is sqlite3.DatabaseError or (
        isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc))


class MetadataStore:
    """Thin typed wrapper over one sqlite3 connection (writer or read-only)."""

    def __init__(self, conn: sqlite3.Connection, location: str, readonly: bool):
        self.conn = conn
        self.location = location
        self.readonly = readonly
        self._depth = 0
        self._bumped = False
        self._vec_dtype = np.dtype("<f4")  # set from meta 'vector_dtype' by create() / connect()

    def _load_vector_dtype(self) -> None:
        name = self.get_meta("vector_dtype") or "float32"
        if name not in VECTOR_DTYPES:
            raise IndexCorruptError(f"{self.location}: meta vector_dtype={name!r} is not one of {sorted(VECTOR_DTYPES)}")
        self._vec_dtype = np.dtype(VECTOR_DTYPES[name])

    @property
    def vector_dtype(self) -> str:
        """Precision of the stored vectors: "float32" or "float16"."""
        return "float16" if self._vec_dtype == np.dtype("<f2") else "float32"

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, db_path: str | None, *, dim: int, factory: str, fingerprint: dict,
               uuid: str, vector_dtype: str = "float32") -> "MetadataStore":
        """Create the schema in a new database file (or ':memory:' when db_path is None); vectors
        are stored as ``vector_dtype`` ("float32" or "float16")."""
        if vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype={vector_dtype!r} must be one of {sorted(VECTOR_DTYPES)}")
        location = ":memory:" if db_path is None else db_path
        conn = sqlite3.connect(location, isolation_level=None, check_same_thread=False)
        store = cls(conn, location, readonly=False)
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL: many vector rows per page
        store._configure()
        conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
        with store.transaction(bump=False):
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("dim", str(int(dim))),
                ("factory", factory), ("fingerprint", json.dumps(fingerprint, sort_keys=True)),
                ("uuid", uuid)] + ([("vector_dtype", vector_dtype)] if vector_dtype != "float32" else []))
            conn.execute("INSERT INTO state (one, generation) VALUES (0, 0)")
        store._load_vector_dtype()
        return store

    @classmethod
    def connect(cls, db_path: str, *, readonly: bool) -> "MetadataStore":
        if not os.path.isfile(db_path):
            raise IndexCorruptError(f"{db_path}: metadata database is missing")
        conn = None
        try:
            if readonly:
                uri = pathlib.Path(os.path.abspath(db_path)).as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            store = cls(conn, db_path, readonly)
            store._configure()
            store.check()
            store._load_vector_dtype()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, (sqlite3.DatabaseError, UnicodeDecodeError)):  # damaged text decodes badly too
                raise IndexCorruptError(f"{db_path}: not a readable mmretrieve metadata database ({exc})") from None
            raise
        return store

    def _configure(self) -> None:
        c = self.conn
        c.execute("PRAGMA busy_timeout = 10000")
        if self.location != ":memory:":
            c.execute(f"PRAGMA mmap_size = {_MMAP_SIZE}")
        if not self.readonly:
            if self.location != ":memory:":
                mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise IndexCorruptError(f"{self.location}: cannot switch SQLite to WAL mode (got {mode})")
            c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA foreign_keys = OFF")

    def check(self, *, full: bool | None = None) -> None:
        """Structural check; full=None runs SQLite's quick_check only on databases up to 64 MB."""
        if full is None:
            full = self.location == ":memory:" or os.path.getsize(self.location) <= 64 << 20
        if full:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise IndexCorruptError(f"{self.location}: SQLite integrity check failed: {rows[:3]}")
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"meta", "state", "items", "vectors", "removed"} - names
        if missing:
            raise IndexCorruptError(f"{self.location}: tables missing: {sorted(missing)}")
        version = self.meta().get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise IndexCorruptError(
                f"{self.location}: schema version {version!r}, this mmretrieve reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def transaction(self, *, bump: bool = True) -> Iterator[None]:
        """One write transaction (nested calls join the outer one); bumps the generation once."""
        if self.readonly:
            raise RuntimeError("read-only store")  # guarded by UnifiedIndex before we get here
        outer = self._depth == 0
        if outer:
            self.conn.execute("BEGIN IMMEDIATE")
            self._bumped = False
        self._depth += 1
        try:
            if bump and not self._bumped:
                self.conn.execute("UPDATE state SET generation = generation + 1")
                self._bumped = True
            yield
        except BaseException:
            self._depth -= 1
            if outer:
                self.conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if outer:
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one committed state."""
        if self._depth:
            yield
            return
        self.conn.execute("BEGIN")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.conn.execute("COMMIT")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # ---------------------------------------------------------------- reads
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def _state_row(self, sql: str, params: tuple = ()) -> tuple:
        """The one row of table state that ``sql`` selects, its first column the integer generation."""
        row = self.conn.execute(sql, params).fetchone()
        if row is None or not isinstance(row[0], int):
            raise IndexCorruptError(f"{self.location}: table state holds {row!r}, expected one integer generation")
        return row

    def generation(self) -> int:
        return self._state_row("SELECT generation FROM state")[0]

    def generation_and_meta(self, key: str) -> tuple[int, str | None]:
        """(generation, meta value of ``key`` or None) in one statement: what a search reads first."""
        gen, value = self._state_row("SELECT generation, (SELECT value FROM meta WHERE key = ?) FROM state", (key,))
        return gen, value

    def count(self, sql_filter: tuple[str, list] | None = None) -> int:
        if sql_filter is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        clause, params = sql_filter
        return int(self.conn.execute(f"SELECT COUNT(*) FROM items WHERE {clause}", params).fetchone()[0])

    def counts_by_modality(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT modality, COUNT(*) FROM items GROUP BY modality").fetchall())

    def filtered_ids(self, sql_filter: tuple[str, list], *, since_gen: int | None = None) -> np.ndarray:
        """Ids (ascending) of the rows matching the filter; with since_gen only those written after it."""
        clause, params = sql_filter
        if since_gen is None:
            cur = self.conn.execute(f"SELECT id FROM items WHERE {clause}", params)
        else:
            # the generation index: a few new rows, not every row of a modality
            cur = self.conn.execute(f"SELECT id FROM items INDEXED BY items_gen WHERE gen > ? AND ({clause})",
                                    [int(since_gen), *params])
        return np.sort(np.fromiter((r[0] for r in cur), dtype=np.int64))

    def all_ids(self) -> np.ndarray:
        cur = self.conn.execute("SELECT id FROM items ORDER BY id")
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def ids_for_path(self, path: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM items WHERE path = ? ORDER BY id", (path,))]

    def file_state(self, path: str) -> tuple[str | None, float | None, int | None] | None:
        row = self.conn.execute(
            "SELECT content_hash, mtime, size FROM items WHERE path = ? ORDER BY id LIMIT 1", (path,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def paths(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT path FROM items WHERE path IS NOT NULL ORDER BY path")]

    def hit_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        """id -> (id, path, modality, seg_start, seg_end, metadata) for the ids that exist."""
        out: dict[int, tuple] = {}
        ids = [int(i) for i in ids]
        if len(ids) <= _FEW:  # a page of search hits: bound parameters beat building a JSON array
            for row in self.conn.execute(
                    f"SELECT {_HIT_COLUMNS} FROM items WHERE id IN ({','.join('?' * len(ids))})", ids):
                out[row[0]] = row
            return out
        for lo in range(0, len(ids), _CHUNK):
            chunk = json.dumps(ids[lo:lo + _CHUNK])
            for row in self.conn.execute(
                    f"SELECT {_HIT_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?))", (chunk,)):
                out[row[0]] = row
        return out

    def vectors_by_id(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        ids = [int(i) for i in ids]
        for lo in range(0, len(ids), _CHUNK):
            chunk = json.dumps(ids[lo:lo + _CHUNK])
            for id_, blob in self.conn.execute(
                    "SELECT id, vector FROM vectors WHERE id IN (SELECT value FROM json_each(?))", (chunk,)):
                out[id_] = self._decode(blob, dim, id_)
        return out

    def vectors_matrix(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids found, their vectors as one (n, dim) float32 matrix) for the given ids."""
        rows = self.conn.execute(
            "SELECT id, vector FROM vectors WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps([int(i) for i in ids]),)).fetchall()
        try:
            joined = b"".join(r[1] for r in rows)
        except TypeError:
            joined = b""
        size = self._vec_dtype.itemsize * dim
        if len(joined) != size * len(rows):
            bad = next(r[0] for r in rows if not isinstance(r[1], bytes) or len(r[1]) != size)
            raise IndexCorruptError(f"{self.location}: vector of id {bad} has the wrong size")
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = to_float32(np.frombuffer(joined, dtype=self._vec_dtype).reshape(len(rows), dim))
        return found, matrix

    def iter_vectors(self, dim: int, *, since_gen: int | None = None,
                     ids: np.ndarray | None = None, chunk: int = _CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of live rows: all, those written after since_gen, or the given ids."""
        if ids is not None:
            for lo in range(0, len(ids), chunk):
                part = [int(i) for i in ids[lo:lo + chunk]]
                got = self.vectors_by_id(part, dim)
                keep = [i for i in part if i in got]
                if keep:
                    yield np.asarray(keep, dtype=np.int64), np.stack([got[i] for i in keep])
            return
        if since_gen is None:
            cur = self.conn.execute("SELECT v.id, v.vector FROM vectors v JOIN items i ON i.id = v.id ORDER BY v.id")
        else:
            cur = self.conn.execute(
                "SELECT v.id, v.vector FROM items i INDEXED BY items_gen JOIN vectors v ON v.id = i.id "
                "WHERE i.gen > ? ORDER BY i.id",
                (since_gen,))
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            yield (np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                   np.stack([self._decode(r[1], dim, r[0]) for r in rows]))

    def path_rows(self, path: str) -> list[tuple]:
        """(id, path, modality, seg_start, seg_end, metadata) of every row of a file, oldest first."""
        return self.conn.execute(f"SELECT {_HIT_COLUMNS} FROM items WHERE path = ? ORDER BY id", (path,)).fetchall()

    def removed_since(self, gen: int) -> np.ndarray:
        cur = self.conn.execute("SELECT id FROM removed WHERE gen > ?", (gen,))
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    # ---------------------------------------------------------------- integrity (verify)
    def orphan_item_ids(self) -> tuple[int, ...]:
        """Metadata rows without a vector."""
        return tuple(int(r[0]) for r in self.conn.execute(
            "SELECT i.id FROM items i LEFT JOIN vectors v ON v.id = i.id WHERE v.id IS NULL ORDER BY i.id"))

    def orphan_vector_ids(self) -> tuple[int, ...]:
        """Vector rows without metadata."""
        return tuple(int(r[0]) for r in self.conn.execute(
            "SELECT v.id FROM vectors v LEFT JOIN items i ON i.id = v.id WHERE i.id IS NULL ORDER BY v.id"))

    def bad_vector_ids(self, dim: int) -> tuple[int, ...]:
        """Live rows whose vector blob has the wrong length or holds NaN/inf."""
        bad = []
        for id_, blob in self.conn.execute(
                "SELECT v.id, v.vector FROM vectors v JOIN items i ON i.id = v.id ORDER BY v.id"):
            if not isinstance(blob, bytes) or len(blob) != self._vec_dtype.itemsize * dim \
                    or not np.isfinite(np.frombuffer(blob, self._vec_dtype)).all():
                bad.append(int(id_))
        return tuple(bad)

    def duplicate_ids(self) -> tuple[int, ...]:
        """Every row of a (path, modality, window) except the newest one."""
        return tuple(int(r[0]) for r in self.conn.execute(
            "SELECT id FROM items i WHERE path IS NOT NULL AND EXISTS (SELECT 1 FROM items j WHERE "
            "j.path = i.path AND j.modality = i.modality AND j.seg_start IS i.seg_start AND "
            "j.seg_end IS i.seg_end AND j.id > i.id) ORDER BY id"))

    def file_hashes(self) -> tuple[dict[str, str | None], tuple[str, ...]]:
        """(path -> recorded content hash, paths whose rows carry different hashes)."""
        files: dict[str, str | None] = {}
        mixed = []
        for p, n_hashes, h in self.conn.execute(
                "SELECT path, COUNT(DISTINCT IFNULL(content_hash, '')), MAX(content_hash) FROM items "
                "WHERE path IS NOT NULL GROUP BY path ORDER BY path"):
            files[p] = h
            if n_hashes > 1:
                mixed.append(p)
        return files, tuple(mixed)

    def data_generation(self) -> int:
        """The newest generation written into the rows or tombstones (0 for an empty database)."""
        return max(int(self.conn.execute(f"SELECT IFNULL(MAX(gen), 0) FROM {table}").fetchone()[0])
                   for table in ("items", "removed"))

    def raise_generation(self, gen: int) -> None:
        """Move the generation counter forward to ``gen`` (never back); inside transaction()."""
        self.conn.execute("UPDATE state SET generation = MAX(generation, ?)", (int(gen),))

    def ids_up_to(self, gen: int) -> set[int]:
        """Live rows written at or before generation ``gen``."""
        return {int(r[0]) for r in self.conn.execute("SELECT id FROM items WHERE gen <= ?", (gen,))}

    def delete_vector_rows(self, ids: Sequence[int]) -> None:
        """Drop vector rows by id (orphans: their metadata is already gone)."""
        ids = [int(i) for i in ids]
        for lo in range(0, len(ids), _CHUNK):
            self.conn.execute("DELETE FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
                              (json.dumps(ids[lo:lo + _CHUNK]),))

    def _decode(self, blob: bytes, dim: int, id_: int) -> np.ndarray:
        if not isinstance(blob, bytes) or len(blob) != self._vec_dtype.itemsize * dim:
            raise IndexCorruptError(f"{self.location}: vector of id {id_} has the wrong size")
        return to_float32(np.frombuffer(blob, dtype=self._vec_dtype))

    # ---------------------------------------------------------------- writes (inside transaction())
    def insert(self, rows: Sequence[tuple], vectors: np.ndarray) -> list[int]:
        gen = self.generation()
        seq = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        first = (int(seq[0]) if seq else 0) + 1
        ids = list(range(first, first + len(rows)))
        self.conn.executemany(
            "INSERT INTO items (id, gen, path, modality, seg_start, seg_end, content_hash, mtime, size, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(i, gen, *row) for i, row in zip(ids, rows)])
        if self._vec_dtype != np.dtype("<f4") and len(vectors) \
                and float(np.abs(vectors).max()) > float(np.finfo(self._vec_dtype).max):
            raise ValueError(f"{self.location}: vectors with components beyond the float16 range (65504) "
                             "cannot be stored in an index created with vector_dtype='float16'")
        little = np.ascontiguousarray(vectors, dtype=self._vec_dtype)
        self.conn.executemany("INSERT INTO vectors (id, vector) VALUES (?, ?)",
                              [(i, little[n].tobytes()) for n, i in enumerate(ids)])
        return ids

    def delete(self, ids: Sequence[int]) -> int:
        gen = self.generation()
        ids = [int(i) for i in ids]
        removed = 0
        for lo in range(0, len(ids), _CHUNK):
            chunk = json.dumps(ids[lo:lo + _CHUNK])
            live = [r[0] for r in self.conn.execute(
                "SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?))", (chunk,))]
            if not live:
                continue
            live_json = json.dumps(live)
            self.conn.execute("DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (live_json,))
            self.conn.execute("DELETE FROM vectors WHERE id IN (SELECT value FROM json_each(?))", (live_json,))
            self.conn.executemany("INSERT OR REPLACE INTO removed (id, gen) VALUES (?, ?)",
                                  [(i, gen) for i in live])
            removed += len(live)
        return removed

    def set_uuid(self, uuid: str) -> None:
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'uuid'", (uuid,))

    def checkpoint(self) -> None:
        if not self.readonly and self.location != ":memory:":
            with contextlib.suppress(sqlite3.OperationalError):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def backup_to(self, db_path: str, *, uuid: str | None = None) -> None:
        """Consistent copy of the committed state into a new file (WAL mode, checkpointed), under a
        new database ``uuid`` when given."""
        dst = sqlite3.connect(db_path, isolation_level=None)
        try:
            self.conn.backup(dst)
            dst.execute("PRAGMA journal_mode = WAL")
            if uuid is not None:
                dst.execute("UPDATE meta SET value = ? WHERE key = 'uuid'", (uuid,))
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def put_meta(self, key: str, value: str) -> None:
        """Insert or replace one meta entry (inside transaction())."""
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def max_id(self) -> int:
        """Largest id ever assigned (an upper bound of the count, read without a scan)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return int(row[0]) if row else 0


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean a damaged file (not 'database is locked')."""
    return _is_corruption(exc)

