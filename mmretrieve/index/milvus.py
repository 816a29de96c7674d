"""MilvusIndex: the IndexBackend contract (backend.py) kept in a Milvus collection.

``uri`` is a local Milvus Lite file (``"/data/media.db"``) or a server (``"http://host:19530"``).
One collection holds the entries (int64 id, float vector, path, modality, window start/end, content
hash, mtime, size, JSON metadata) under an inner-product metric: every mmretrieve vector is
L2-normalised, so scores equal UnifiedIndex's. A small companion collection ``<name>_mmr_meta`` holds
the format, dimension, index type and the encoder fingerprint, checked like UnifiedIndex's.

Filters (``modality=``, ``where=``) become Milvus boolean expressions built only from validated parts:
field names are constants, metadata keys must match ``[\\w\\- .:/]+``, and values are either passed as
``filter_params`` templates (``filter_templates=True``, Milvus server >= 2.5) or rendered as escaped
literals (quotes, backslashes and newlines escaped; other control characters refused). Milvus has no
multi-row transactions: ``batch()`` groups writes into one delete and one insert, deletes first, so an
interrupted batch leaves files absent (re-indexed next time), never duplicated.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import EncoderMismatchError, IndexCorruptError, IndexReadOnlyError
from ..modality import Modality
from .filters import normalize_modalities
from .fingerprint import canonical_fingerprint, fingerprint_difference
from .health import CacheCheck, IndexCheck
from .records import Hit, Record, as_vectors, record_row

__all__ = ["MilvusIndex", "export_to_milvus", "build_milvus_filter"]

_FORMAT = "mmretrieve-milvus/1"
_META_SUFFIX = "_mmr_meta"
_PATH_MAX = 8192
_MAX_LIMIT = 16384  # Milvus caps topk and query windows
_CHUNK = 1000
_KEY_RE = re.compile(r"^[\w\-. :/]{1,256}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_OUTPUT = ["path", "modality", "seg_start", "seg_end", "metadata"]
_INT64_MAX = (1 << 63) - 1


def _client(uri: str, token: str | None):
    try:
        from pymilvus import MilvusClient
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("MilvusIndex needs pymilvus: pip install 'mmretrieve[milvus]' "
                          "(plus milvus-lite for local files)") from None
    uri = os.fspath(uri)
    if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
        uri = os.path.abspath(os.path.expanduser(uri))
    return MilvusClient(uri=uri, token=token or "")


# ---------------------------------------------------------------------------------------- filters
def _literal(value: Any, what: str) -> str:
    """A Milvus expression literal for a str/int/float/bool; never lets the value leave its quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise ValueError(f"{what}={value!r} is outside int64")
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}={value!r}: NaN/inf can never match stored JSON")
        return repr(float(value))
    if isinstance(value, str):
        bad = [c for c in value if (ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127]
        if bad:
            raise ValueError(f"{what}={value[:40]!r} contains control characters Milvus filters cannot express")
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\r", "\\r").replace("\t", "\\t"))
        return f'"{escaped}"'
    raise ValueError(f"{what} value {value!r} of type {type(value).__name__} is not supported; "
                     "use str, int, float, bool, None or a list of them")


class _Expr:
    """Collects an expression and, in template mode, its named parameters."""

    def __init__(self, templates: bool):
        self.templates = templates
        self.params: dict[str, Any] = {}

    def value(self, value: Any, what: str) -> str:
        text = _literal(value, what)  # validates in both modes
        if not self.templates:
            return text
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + "}"


def build_milvus_filter(modality: Any = None, where: Mapping | None = None, *,
                        templates: bool = False) -> tuple[str, dict] | None:
    """(expression, filter_params) for a modality / metadata filter, or None when unfiltered.

    An empty value list in ``where`` matches nothing: the expression is then ``"id < 0"``.
    """
    e = _Expr(templates)
    clauses: list[str] = []
    mods = normalize_modalities(modality)
    if mods is not None:
        clauses.append("(" + " or ".join(f"modality == {e.value(m, 'modality')}" for m in mods) + ")")
    if where:
        if not isinstance(where, Mapping):
            raise ValueError(f"where={where!r} must be a mapping of metadata key -> value")
        for key, value in where.items():
            if not isinstance(key, str) or not _KEY_RE.match(key):
                raise ValueError(f"where key {key!r} must be 1-256 letters, digits, '_', '-', '.', ':', '/' "
                                 "or spaces (no quotes, brackets or backslashes)")
            field = f'metadata["{key}"]'
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            if not values:
                return "id < 0", {}
            parts = [f"{field} is null" if v is None else f"{field} == {e.value(v, f'where[{key!r}]')}"
                     for v in values]
            clauses.append("(" + " or ".join(parts) + ")")
    if not clauses:
        return None
    return " and ".join(clauses), e.params


# ---------------------------------------------------------------------------------------- index
class MilvusIndex:
    """Vectors of every modality and their records in one Milvus collection. Use create() or open()."""

    def __init__(self, client, collection: str, *, uri: str, dim: int, factory: str, fingerprint: dict,
                 readonly: bool = False, filter_templates: bool = False):
        self._client = client
        self.collection = collection
        self.uri = uri
        self.dim = dim
        self.factory = factory
        self.fingerprint = fingerprint
        self.readonly = readonly
        self.filter_templates = filter_templates
        self.path = f"{uri}#{collection}"
        self._depth = 0
        self._pending_delete: list[int] = []
        self._pending_insert: list[dict] = []
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, dim: int, fingerprint: dict, *, uri: str, collection: str = "mmretrieve",
               index_type: str = "FLAT", index_params: Mapping | None = None, token: str | None = None,
               overwrite: bool = False, filter_templates: bool = False) -> "MilvusIndex":
        """A new empty collection (FileExistsError if it exists, unless ``overwrite``).

        ``index_type`` is a Milvus vector index ("FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"...; Milvus Lite
        supports a subset) with ``index_params`` passed through (e.g. {"M": 16, "efConstruction": 200}).
        """
        from pymilvus import DataType, MilvusClient

        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim={dim!r} must be a positive int")
        _check_name(collection)
        fingerprint = canonical_fingerprint(fingerprint)
        client = _client(uri, token)
        try:
            meta = collection + _META_SUFFIX
            if client.has_collection(collection) or client.has_collection(meta):
                if not overwrite:
                    raise FileExistsError(f"Milvus collection {collection!r} already exists at {uri}; use "
                                          "MilvusIndex.open() or overwrite=True")
                for name in (collection, meta):
                    if client.has_collection(name):
                        client.drop_collection(name)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("path", DataType.VARCHAR, max_length=_PATH_MAX, nullable=True)
            schema.add_field("modality", DataType.VARCHAR, max_length=16)
            schema.add_field("seg_start", DataType.DOUBLE, nullable=True)
            schema.add_field("seg_end", DataType.DOUBLE, nullable=True)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=256, nullable=True)
            schema.add_field("mtime", DataType.DOUBLE, nullable=True)
            schema.add_field("size", DataType.INT64, nullable=True)
            schema.add_field("metadata", DataType.JSON)
            params = client.prepare_index_params()
            params.add_index("vector", index_type=index_type, metric_type="IP", params=dict(index_params or {}))
            client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
            mschema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            mschema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
            mschema.add_field("value", DataType.VARCHAR, max_length=65535)
            mschema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
            mparams = client.prepare_index_params()
            mparams.add_index("v", index_type="FLAT", metric_type="L2")
            client.create_collection(meta, schema=mschema, index_params=mparams, consistency_level="Strong")
            fp_json = json.dumps(fingerprint, sort_keys=True)
            if len(fp_json.encode()) > 65535:
                raise ValueError("fingerprint is larger than 64 KiB and cannot be stored in Milvus")
            client.insert(meta, [
                {"key": "format", "value": _FORMAT, "v": [0.0, 0.0]},
                {"key": "dim", "value": str(dim), "v": [0.0, 0.0]},
                {"key": "factory", "value": index_type, "v": [0.0, 0.0]},
                {"key": "fingerprint", "value": fp_json, "v": [0.0, 0.0]},
            ])
        except BaseException:
            client.close()
            raise
        return cls(client, collection, uri=os.fspath(uri), dim=dim, factory=index_type, fingerprint=fingerprint,
                   filter_templates=filter_templates)

    @classmethod
    def open(cls, uri: str, collection: str = "mmretrieve", *, token: str | None = None,
             readonly: bool = False, filter_templates: bool = False) -> "MilvusIndex":
        """Connect to an existing collection made by create() (FileNotFoundError / IndexCorruptError)."""
        _check_name(collection)
        client = _client(uri, token)
        try:
            meta = collection + _META_SUFFIX
            if not client.has_collection(collection):
                raise FileNotFoundError(f"no Milvus collection {collection!r} at {uri}")
            if not client.has_collection(meta):
                raise IndexCorruptError(f"{uri}#{collection}: no {meta!r} collection; not made by mmretrieve "
                                        "(create it with MilvusIndex.create or export_to_milvus)")
            rows = {r["key"]: r["value"] for r in client.query(meta, filter='key != ""', output_fields=["key", "value"])}
            if rows.get("format") != _FORMAT:
                raise IndexCorruptError(f"{uri}#{collection}: unknown format {rows.get('format')!r}")
            try:
                dim, fingerprint = int(rows["dim"]), json.loads(rows["fingerprint"])
            except (KeyError, ValueError):
                raise IndexCorruptError(f"{uri}#{collection}: {meta} is damaged") from None
        except BaseException:
            client.close()
            raise
        return cls(client, collection, uri=os.fspath(uri), dim=dim, factory=rows.get("factory", "?"),
                   fingerprint=fingerprint, readonly=readonly, filter_templates=filter_templates)

    @staticmethod
    def exists(uri: str, collection: str = "mmretrieve", *, token: str | None = None) -> bool:
        _check_name(collection)
        client = _client(uri, token)
        try:
            return bool(client.has_collection(collection))
        finally:
            client.close()

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Milvus index {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise IndexReadOnlyError(f"Milvus index {self.path} was opened with readonly=True; open it without "
                                     "readonly to modify it")

    def _filter(self, modality: Any = None, where: Mapping | None = None) -> tuple[str, dict]:
        built = build_milvus_filter(modality, where, templates=self.filter_templates)
        return built if built is not None else ("", {})

    def _kw(self, expr: str, params: dict) -> dict:
        kw: dict[str, Any] = {"filter": expr}
        if params:
            kw["filter_params"] = params
        return kw

    def _eq(self, field: str, value: Any) -> tuple[str, dict]:
        e = _Expr(self.filter_templates)
        return f"{field} == {e.value(value, field)}", e.params

    def _query(self, expr: str, params: dict, fields: list[str]) -> list[dict]:
        """Every row matching expr (paged; Milvus caps a single query window)."""
        if not expr:
            expr = "id >= 0 or id < 0"
        first = self._client.query(self.collection, output_fields=fields, limit=_MAX_LIMIT, **self._kw(expr, params))
        if len(first) < _MAX_LIMIT:
            return list(first)
        it = self._client.query_iterator(self.collection, batch_size=_CHUNK, output_fields=fields,
                                         **self._kw(expr, params))
        out: list[dict] = []
        try:
            while True:
                page = it.next()
                if not page:
                    break
                out.extend(page)
        finally:
            it.close()
        return out

    def _iter_rows(self, fields: list[str], batch: int = _CHUNK) -> Iterator[list[dict]]:
        """Every row of the collection, ``batch`` at a time."""
        it = self._client.query_iterator(self.collection, batch_size=max(1, min(batch, _MAX_LIMIT)),
                                         output_fields=fields, filter="id >= 0 or id < 0")
        try:
            while True:
                page = it.next()
                if not page:
                    return
                yield page
        finally:
            it.close()

    def _count(self, expr: str = "", params: dict | None = None) -> int:
        res = self._client.query(self.collection, output_fields=["count(*)"], **self._kw(expr, params or {}))
        return int(res[0]["count(*)"]) if res else 0

    def _entities(self, vectors: np.ndarray, records: Sequence[Record], ids: Sequence[int] | None = None) -> list[dict]:
        out = []
        for i, (vec, rec) in enumerate(zip(vectors, records)):
            path, modality, start, end, chash, mtime, size, meta_json = record_row(rec, i)
            if path is not None and len(path.encode()) > _PATH_MAX:
                raise ValueError(f"records[{i}].path is longer than {_PATH_MAX} bytes")
            out.append({
                "id": int(ids[i]) if ids is not None else _new_id(),
                "vector": vec.tolist(), "path": path, "modality": modality, "seg_start": start,
                "seg_end": end, "content_hash": chash, "mtime": mtime, "size": size,
                "metadata": json.loads(meta_json),
            })
        return out

    def _flush_pending(self) -> None:
        deletes, inserts = self._pending_delete, self._pending_insert
        self._pending_delete, self._pending_insert = [], []
        if deletes:  # deletes first: an interruption leaves a file absent (re-indexed), never doubled
            for lo in range(0, len(deletes), _CHUNK):
                self._client.delete(self.collection, ids=deletes[lo:lo + _CHUNK])
        for lo in range(0, len(inserts), _CHUNK):
            self._client.insert(self.collection, inserts[lo:lo + _CHUNK])

    def _ids_for_path(self, path: str) -> list[int]:
        expr, params = self._eq("path", path)
        return [int(r["id"]) for r in self._query(expr, params, ["id"])]

    # ------------------------------------------------------------------ fingerprint
    def check_fingerprint(self, fingerprint: dict) -> None:
        """EncoderMismatchError listing the keys where ``fingerprint`` differs from the collection's."""
        details = fingerprint_difference(fingerprint, self.fingerprint)
        if details:
            raise EncoderMismatchError(f"Milvus collection {self.path} was built with a different encoder; "
                                       f"differing keys: {details}. Use the encoder that built it")

    # ------------------------------------------------------------------ writes
    @contextlib.contextmanager
    def batch(self) -> Iterator["MilvusIndex"]:
        """Group writes: one delete and one insert call at the end (no-op if the body raises)."""
        self._check_writable()
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._pending_delete, self._pending_insert = [], []
            raise
        self._depth -= 1
        if self._depth == 0:
            self._flush_pending()

    def add(self, vectors: Any, records: Sequence[Record], *, ids: Sequence[int] | None = None) -> list[int]:
        """Store N vectors with their records; returns their int64 ids (random unless given)."""
        self._check_writable()
        records = list(records)
        arr = as_vectors(vectors, self.dim, len(records))
        rows = self._entities(arr, records, ids)
        self._pending_insert.extend(rows)
        if self._depth == 0:
            self._flush_pending()
        return [r["id"] for r in rows]

    def replace_path(self, path: str | os.PathLike, vectors: Any, records: Sequence[Record]) -> list[int]:
        """Upsert a file: drop every row of ``path`` and add the new ones."""
        self._check_writable()
        path = os.fspath(path)
        records = list(records)
        for i, r in enumerate(records):
            if r.path is None or os.fspath(r.path) != path:
                raise ValueError(f"records[{i}].path={r.path!r} differs from replace_path({path!r})")
        arr = as_vectors(vectors, self.dim, len(records))
        rows = self._entities(arr, records)
        self._pending_delete.extend(self._ids_for_path(path))
        self._pending_insert.extend(rows)
        if self._depth == 0:
            self._flush_pending()
        return [r["id"] for r in rows]

    def remove(self, ids: Any) -> int:
        """Remove rows by id; returns how many existed."""
        self._check_writable()
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        found = self._existing(ids)
        if found:
            self._pending_delete.extend(found)
            if self._depth == 0:
                self._flush_pending()
        return len(found)

    def remove_path(self, path: str | os.PathLike) -> int:
        """Remove every row of a file; returns how many."""
        self._check_writable()
        ids = self._ids_for_path(os.fspath(path))
        if ids:
            self._pending_delete.extend(ids)
            if self._depth == 0:
                self._flush_pending()
        return len(ids)

    # ------------------------------------------------------------------ reads
    def _existing(self, ids: list[int]) -> list[int]:
        found: set[int] = set()
        for lo in range(0, len(ids), _CHUNK):
            part = ids[lo:lo + _CHUNK]
            if part:
                found.update(int(r["id"]) for r in self._client.query(self.collection, ids=part, output_fields=["id"]))
        return [i for i in dict.fromkeys(ids) if i in found]

    def file_state(self, path: str | os.PathLike) -> tuple[str | None, float | None, int | None] | None:
        """(content_hash, mtime, size) recorded for a file, or None if it is not indexed."""
        self._check_open()
        expr, params = self._eq("path", os.fspath(path))
        res = self._client.query(self.collection, output_fields=["content_hash", "mtime", "size"], limit=1,
                                 **self._kw(expr, params))
        if not res:
            return None
        r = res[0]
        return (r.get("content_hash"), r.get("mtime"), None if r.get("size") is None else int(r["size"]))

    def paths(self) -> list[str]:
        self._check_open()
        return sorted({r["path"] for r in self._query("path is not null", {}, ["path"])})

    def __len__(self) -> int:
        self._check_open()
        return self._count()

    def count(self, modality: Any = None) -> int:
        self._check_open()
        return self._count(*self._filter(modality))

    def stats(self) -> dict:
        """{"total": n, "text": n, "image": n, "video": n, "audio": n}."""
        out = {m.value: self.count(m) for m in Modality}
        return {"total": sum(out.values()), **out}

    def _fetch(self, ids: Any, fields: list[str]) -> tuple[list[int], dict[int, dict]]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        got: dict[int, dict] = {}
        for lo in range(0, len(ids), _CHUNK):
            part = ids[lo:lo + _CHUNK]
            for r in self._client.query(self.collection, ids=part, output_fields=["id", *fields]):
                got[int(r["id"])] = r
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"ids not in Milvus collection {self.path}: {missing[:10]}")
        return ids, got

    def get(self, ids: Any) -> list[Hit]:
        """Stored entries by id, in the given order (score NaN); KeyError for unknown ids."""
        self._check_open()
        ids, got = self._fetch(ids, _OUTPUT)
        return [_hit(i, math.nan, got[i]) for i in ids]

    def entries(self, path: str | os.PathLike) -> list[Hit]:
        """Stored entries of one file (score NaN), in window order; [] when it is not indexed."""
        self._check_open()
        expr, params = self._eq("path", os.fspath(path))
        rows = self._query(expr, params, ["id", *_OUTPUT])
        rows.sort(key=lambda r: (r.get("seg_start") is not None, r.get("seg_start") or 0.0, int(r["id"])))
        return [_hit(int(r["id"]), math.nan, r) for r in rows]

    def iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks covering every stored entry once."""
        self._check_open()
        for page in self._iter_rows(["id", "vector"], chunk):
            yield (np.fromiter((int(r["id"]) for r in page), dtype=np.int64, count=len(page)),
                   np.asarray([r["vector"] for r in page], dtype=np.float32).reshape(len(page), self.dim))

    def vectors(self, ids: Any) -> np.ndarray:
        """(len(ids), dim) float32 stored vectors in the given order; KeyError for unknown ids."""
        self._check_open()
        ids, got = self._fetch(ids, ["vector"])
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray([got[i]["vector"] for i in ids], dtype=np.float32)

    def structure(self) -> dict:
        """The Milvus vector index searched (FLAT is exact; Milvus tunes nothing here)."""
        exact = self.factory.upper() == "FLAT"
        note = "" if exact else "approximate Milvus index: recall not measured by mmretrieve"
        return {"factory": self.factory, "structure": self.factory, "exact": exact, "params": {},
                "recall": 1.0 if exact else None, "target": None, "fallback": False, "note": note,
                "description": f"Milvus {self.factory}" + (f", {note}" if note else "")}

    def search(self, queries: Any, k: int = 10, *, modality: Any = None,
               where: Mapping | None = None) -> list[list[Hit]]:
        """Top-k by inner product per query row, filtered by modality and user metadata in Milvus."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k={k!r} must be a positive int")
        if k > _MAX_LIMIT:
            raise ValueError(f"k={k} exceeds Milvus's limit of {_MAX_LIMIT} results per query")
        self._check_open()
        q = as_vectors(queries, self.dim, None, "queries")
        expr, params = self._filter(modality, where)
        if len(q) == 0:
            return []
        res = self._client.search(self.collection, data=q.tolist(), limit=int(k), output_fields=_OUTPUT,
                                  search_params={"metric_type": "IP"}, anns_field="vector",
                                  **self._kw(expr, params))
        return [[_hit(int(h["id"]), float(h["distance"]), h["entity"]) for h in row] for row in res]

    # ------------------------------------------------------------------ integrity
    def check(self) -> IndexCheck:
        """Counts, files and hashes, NaN/inf vectors and duplicate windows, from one pass over the
        collection. Milvus keeps metadata and vector in one row and its own vector index, so there
        are no orphans and no cache file to check."""
        self._check_open()
        by_mod: dict[str, int] = {}
        hashes: dict[str, set] = {}
        windows: dict[tuple, list[int]] = {}
        bad: list[int] = []
        for page in self._iter_rows(["id", "path", "modality", "seg_start", "seg_end", "content_hash", "vector"]):
            for r in page:
                id_, path = int(r["id"]), r.get("path")
                by_mod[r["modality"]] = by_mod.get(r["modality"], 0) + 1
                if not np.isfinite(np.asarray(r["vector"], dtype=np.float32)).all():
                    bad.append(id_)
                if path is not None:
                    hashes.setdefault(path, set()).add(r.get("content_hash"))
                    windows.setdefault((path, r["modality"], r.get("seg_start"), r.get("seg_end")), []).append(id_)
        counts = {"total": sum(by_mod.values()), **{m.value: by_mod.get(m.value, 0) for m in Modality}}
        files = {p: max((h for h in hs if h is not None), default=None) for p, hs in sorted(hashes.items())}
        mixed = tuple(p for p, hs in sorted(hashes.items()) if len({h or "" for h in hs}) > 1)
        # Milvus ids carry no order: of a window stored twice, the largest id is kept
        duplicates = tuple(sorted(i for ids in windows.values() if len(ids) > 1 for i in sorted(ids)[:-1]))
        return IndexCheck(generation=None, counts=counts, files=files,
                          cache=CacheCheck("ok", "no cache file: Milvus keeps its own vector index"),
                          bad_vectors=tuple(sorted(bad)), duplicates=duplicates, mixed_files=mixed)

    def repair(self, check: IndexCheck) -> list[str]:
        """Drop the bad and duplicate rows ``check`` found (one delete); returns what was done."""
        self._check_writable()
        drop = sorted(set(check.orphan_items) | set(check.bad_vectors) | set(check.duplicates))
        if not drop:
            return []
        with self.batch():
            n = self.remove(drop)
        return [f"removed {n} orphan/bad/duplicate row(s)"]

    def rebuild(self) -> None:
        """Milvus maintains its vector index itself: this only hands it every pending write."""
        self.save()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | None = None) -> None:
        """Ask Milvus to persist what was written (a snapshot elsewhere is not supported)."""
        self._check_open()
        if path is not None:
            raise ValueError(f"a Milvus collection is persisted by Milvus; save({os.fspath(path)!r}) to another "
                             "place is not supported (query it, or export a UnifiedIndex with export_to_milvus)")
        if not self.readonly:
            self._flush_pending()
            with contextlib.suppress(Exception):  # Milvus Lite persists on write; flush is a server hint
                self._client.flush(self.collection)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self.readonly and self._depth == 0:
                self._flush_pending()
        finally:
            self._closed = True
            self._client.close()

    def drop(self) -> None:
        """Delete the collection and its metadata collection from Milvus."""
        self._check_writable()
        for name in (self.collection, self.collection + _META_SUFFIX):
            if self._client.has_collection(name):
                self._client.drop_collection(name)
        self.close()

    def __enter__(self) -> "MilvusIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MilvusIndex({self.uri!r}, collection={self.collection!r}, dim={self.dim}, factory={self.factory!r})"


# ---------------------------------------------------------------------------------------- helpers
def _check_name(collection: str) -> None:
    if not isinstance(collection, str) or not _NAME_RE.match(collection):
        raise ValueError(f"collection={collection!r} must start with a letter or '_' and hold only letters, "
                         "digits and '_' (Milvus naming rules)")


def _new_id() -> int:
    return int.from_bytes(os.urandom(8), "little") & _INT64_MAX


def _hit(id_: int, score: float, entity: Mapping) -> Hit:
    meta = entity.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Hit(id=id_, score=score, path=entity.get("path"), modality=Modality(entity["modality"]),
               start=entity.get("seg_start"), end=entity.get("seg_end"), metadata=dict(meta))


def export_to_milvus(index: Any, uri: str, collection: str = "mmretrieve", *, index_type: str = "FLAT",
                     index_params: Mapping | None = None, token: str | None = None, overwrite: bool = False,
                     batch_size: int = _CHUNK, filter_templates: bool = False) -> MilvusIndex:
    """Copy every entry of an index (same ids, vectors, records, fingerprint) into a new collection."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    target = MilvusIndex.create(index.dim, index.fingerprint, uri=uri, collection=collection,
                                index_type=index_type, index_params=index_params, token=token,
                                overwrite=overwrite, filter_templates=filter_templates)
    try:
        states: dict[str, Any] = {}
        for ids, vecs in index.iter_vectors(batch_size):
            hits = index.get(ids)
            records = []
            for h in hits:
                if h.path is not None and h.path not in states:
                    states[h.path] = index.file_state(h.path)
                chash, mtime, size = states.get(h.path) or (None, None, None)
                records.append(Record(path=h.path, modality=h.modality, start=h.start, end=h.end,
                                      content_hash=chash, mtime=mtime, size=size, metadata=h.metadata))
            target.add(vecs, records, ids=[int(i) for i in ids])
        target.save()
    except BaseException:
        target.close()
        raise
    return target
