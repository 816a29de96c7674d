"""Integrity check (and repair) of an on-disk index: vectors, metadata, faiss cache, encoder, media.

verify_index(path) reads the index without taking the writer lock (a writer may be running) and
reports, in a typed :class:`VerifyReport`:

- counts (rows, files, per modality), the database generation;
- orphans: metadata rows without a vector and vector rows without metadata; vectors of the wrong size
  or with NaN/inf; duplicate entries (same path and window stored more than once);
- the faiss cache: missing / stale / corrupt (header, checksum, faiss parse) / from another database,
  and, when it reflects the current generation, ids present in SQLite but not in faiss and back, and
  (Flat factories) stored vectors that differ from the cached ones;
- the encoder: the manifest and database agree on the fingerprint (else IndexCorruptError at open),
  and the encoder rebuilt from the recorded preset still has that fingerprint (``check_encoder``);
- media: files that no longer exist, and files whose content hash differs from the stored one.

repair=True takes the writer lock (IndexLockedError while another writer runs) and, in this order:
moves a bad faiss cache aside, removes orphan/bad/duplicate rows (one transaction), re-embeds changed
files through the Retriever (old rows dropped and new rows written in one transaction per file
batch, so a crash during repair leaves the previous state), optionally drops rows of missing media
(``prune_missing``), then rebuilds and saves the faiss cache. Damage that cannot be repaired here
(manifest or database unreadable) raises IndexCorruptError naming the file.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import IndexCorruptError, MMRError

__all__ = ["verify_index", "VerifyReport", "CacheCheck", "EncoderCheck"]


@dataclass(frozen=True)
class CacheCheck:
    """State of vectors.faiss: status is ok | missing | stale | corrupt | foreign."""

    status: str
    detail: str = ""
    generation: int | None = None
    ntotal: int | None = None
    missing_ids: tuple[int, ...] = ()  # in SQLite, not in faiss
    extra_ids: tuple[int, ...] = ()  # in faiss, not in SQLite
    mismatched_ids: tuple[int, ...] = ()  # cached vector differs from the stored one

    @property
    def ok(self) -> bool:
        # a stale or missing cache is normal (it is caught up from SQLite on open); damage is not
        return self.status in ("ok", "stale", "missing") and not (self.missing_ids or self.extra_ids or self.mismatched_ids)


@dataclass(frozen=True)
class EncoderCheck:
    """status is ok | mismatch | unavailable | skipped."""

    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


@dataclass(frozen=True)
class VerifyReport:
    path: str
    generation: int
    entries: int
    files: int
    counts: dict[str, int]
    orphan_items: tuple[int, ...]  # metadata rows without a vector
    orphan_vectors: tuple[int, ...]  # vector rows without metadata
    bad_vectors: tuple[int, ...]  # wrong byte length or non-finite values
    duplicates: tuple[int, ...]  # extra rows of a (path, start, end) stored more than once
    cache: CacheCheck
    encoder: EncoderCheck
    missing_media: tuple[str, ...] = ()
    changed_media: tuple[str, ...] = ()
    mixed_files: tuple[str, ...] = ()  # rows of one path with different content hashes
    repaired: tuple[str, ...] = ()  # what repair did (empty without repair)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing needs repair (missing media are reported but not counted as damage)."""
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        if self.orphan_items:
            out.append(f"{len(self.orphan_items)} metadata row(s) without a vector: ids {_few(self.orphan_items)}")
        if self.orphan_vectors:
            out.append(f"{len(self.orphan_vectors)} vector row(s) without metadata: ids {_few(self.orphan_vectors)}")
        if self.bad_vectors:
            out.append(f"{len(self.bad_vectors)} vector(s) of the wrong size or with NaN/inf: ids {_few(self.bad_vectors)}")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate row(s): ids {_few(self.duplicates)}")
        if not self.cache.ok:
            c = self.cache
            bits = [f"faiss cache {c.status}"] + ([c.detail] if c.detail else [])
            if c.missing_ids:
                bits.append(f"{len(c.missing_ids)} id(s) missing from faiss")
            if c.extra_ids:
                bits.append(f"{len(c.extra_ids)} id(s) in faiss but not in SQLite")
            if c.mismatched_ids:
                bits.append(f"{len(c.mismatched_ids)} cached vector(s) differ from the stored ones")
            out.append("; ".join(bits))
        if not self.encoder.ok:
            out.append(f"encoder {self.encoder.status}: {self.encoder.detail}")
        if self.changed_media:
            out.append(f"{len(self.changed_media)} file(s) changed since indexing: {_few(self.changed_media)}")
        if self.mixed_files:
            out.append(f"{len(self.mixed_files)} file(s) with rows of different contents: {_few(self.mixed_files)}")
        return out

    def __str__(self) -> str:
        lines = [
            f"index {self.path}: {self.entries} entries from {self.files} file(s) "
            + "(" + ", ".join(f"{k} {v}" for k, v in self.counts.items() if k != "total") + f"), generation {self.generation}",
            f"faiss cache: {self.cache.status}" + (f" ({self.cache.detail})" if self.cache.detail else ""),
            f"encoder: {self.encoder.status}" + (f" ({self.encoder.detail})" if self.encoder.detail else ""),
        ]
        if self.missing_media:
            lines.append(f"missing media: {len(self.missing_media)} file(s) no longer exist: {_few(self.missing_media)}")
        problems = self.problems()
        lines += [f"PROBLEM: {p}" for p in problems]
        lines += [f"repaired: {r}" for r in self.repaired]
        if not problems:
            lines.append("OK: vectors, metadata, faiss cache and encoder agree")
        return "\n".join(lines)


def _few(items, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def verify_index(
    path: str | os.PathLike,
    *,
    repair: bool = False,
    check_encoder: bool = True,
    hash_media: bool = True,
    prune_missing: bool = False,
    pretrained: str | None = None,
    device: str | None = None,
    num_workers: int | None = 0,
) -> VerifyReport:
    """Check an index directory; with repair=True also fix what can be fixed (see the module doc).

    ``hash_media=False`` skips reading every indexed file (only existence is checked);
    ``prune_missing`` (with repair) removes the rows of files that no longer exist;
    ``pretrained``/``device`` are used to rebuild the encoder (fingerprint check, re-embedding).
    """
    t0 = time.perf_counter()
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    report = _inspect(target, check_encoder=check_encoder, hash_media=hash_media, pretrained=pretrained, device=device)
    if not repair:
        return _with(report, seconds=time.perf_counter() - t0)
    actions = _repair(target, report, prune_missing=prune_missing, pretrained=pretrained, device=device, num_workers=num_workers)
    after = _inspect(target, check_encoder=check_encoder, hash_media=hash_media, pretrained=pretrained, device=device)
    return _with(after, repaired=tuple(actions), seconds=time.perf_counter() - t0)


def _with(report: VerifyReport, **changes) -> VerifyReport:
    import dataclasses

    return dataclasses.replace(report, **changes)


# ---------------------------------------------------------------------------------------- inspection
def _inspect(target: str, *, check_encoder: bool, hash_media: bool, pretrained, device) -> VerifyReport:
    from .index.layout import CACHE_NAME, read_manifest
    from .index.store import DB_NAME, MetadataStore
    from .modality import Modality

    manifest = read_manifest(target)  # IndexCorruptError naming the file
    store = MetadataStore.connect(os.path.join(target, DB_NAME), readonly=True)
    try:
        conn = store.conn
        conn.execute("BEGIN")  # one snapshot for every query below
        try:
            meta = store.meta()
            try:
                db_fp = json.loads(meta.get("fingerprint", ""))
                dim = int(meta.get("dim", ""))
            except ValueError:
                raise IndexCorruptError(f"{store.location}: meta table is damaged") from None
            if dim != manifest["dim"] or meta.get("factory") != manifest["factory"] or db_fp != manifest["fingerprint"]:
                raise IndexCorruptError(f"{target}/manifest.json disagrees with {DB_NAME} on dim, factory or fingerprint")
            factory = manifest["factory"]
            generation = store.generation()
            item_ids = np.fromiter((r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")), dtype=np.int64)
            orphan_items = tuple(int(r[0]) for r in conn.execute(
                "SELECT i.id FROM items i LEFT JOIN vectors v ON v.id = i.id WHERE v.id IS NULL ORDER BY i.id"))
            orphan_vectors = tuple(int(r[0]) for r in conn.execute(
                "SELECT v.id FROM vectors v LEFT JOIN items i ON i.id = v.id WHERE i.id IS NULL ORDER BY v.id"))
            bad: list[int] = []
            for id_, blob in conn.execute(
                    "SELECT v.id, v.vector FROM vectors v JOIN items i ON i.id = v.id ORDER BY v.id"):
                if not isinstance(blob, bytes) or len(blob) != 4 * dim or not np.isfinite(np.frombuffer(blob, "<f4")).all():
                    bad.append(int(id_))
            duplicates = tuple(int(r[0]) for r in conn.execute(
                # every row of a (path, modality, window) except the newest one
                "SELECT id FROM items i WHERE path IS NOT NULL AND EXISTS (SELECT 1 FROM items j WHERE "
                "j.path = i.path AND j.modality = i.modality AND j.seg_start IS i.seg_start AND "
                "j.seg_end IS i.seg_end AND j.id > i.id) ORDER BY id"))
            files = {}
            mixed = []
            for p, n_hashes, h in conn.execute(
                    "SELECT path, COUNT(DISTINCT IFNULL(content_hash, '')), MAX(content_hash) FROM items "
                    "WHERE path IS NOT NULL GROUP BY path ORDER BY path"):
                files[p] = h
                if n_hashes > 1:
                    mixed.append(p)
            by_mod = dict(conn.execute("SELECT modality, COUNT(*) FROM items GROUP BY modality").fetchall())
            cache = _check_cache(os.path.join(target, CACHE_NAME), store, dim, factory, meta.get("uuid", ""),
                                 generation, item_ids, set(bad))
        finally:
            conn.execute("COMMIT")
    finally:
        store.close()
    counts = {"total": int(len(item_ids))}
    counts.update({m.value: int(by_mod.get(m.value, 0)) for m in Modality})
    missing, changed = _check_media(files, hash_media)
    encoder = _check_encoder(db_fp, pretrained, device) if check_encoder else EncoderCheck("skipped")
    return VerifyReport(
        path=target, generation=generation, entries=int(len(item_ids)), files=len(files), counts=counts,
        orphan_items=orphan_items, orphan_vectors=orphan_vectors, bad_vectors=tuple(bad), duplicates=duplicates,
        cache=cache, encoder=encoder, missing_media=tuple(missing), changed_media=tuple(changed),
        mixed_files=tuple(mixed),
    )


def _check_cache(cache_path, store, dim, factory, db_uuid, generation, item_ids, bad) -> CacheCheck:
    import faiss

    from .index.vectors import read_cache

    if not os.path.exists(cache_path):
        return CacheCheck("missing", "rebuilt from the database when the index is opened")
    try:
        index, header = read_cache(cache_path, dim=dim, factory=factory)
    except IndexCorruptError as e:
        return CacheCheck("corrupt", str(e))
    gen = header.get("generation")
    if header.get("uuid") != db_uuid:
        return CacheCheck("foreign", "cache of another database (ignored and rebuilt on open)", gen, int(index.ntotal))
    if not isinstance(gen, int) or gen > generation:
        return CacheCheck("corrupt", f"cache claims generation {gen!r}, newer than the database's {generation}", None, int(index.ntotal))
    cached = faiss.vector_to_array(index.id_map).astype(np.int64)
    db = set(int(i) for i in item_ids)
    if len(set(cached.tolist())) != len(cached):
        return CacheCheck("corrupt", "duplicate ids inside the faiss cache", gen, int(index.ntotal))
    if gen < generation:
        # stale: a cached id may only be absent from SQLite if it was removed after the cache was written
        removed = set(int(i) for i in store.removed_since(gen))
        older = set(int(r[0]) for r in store.conn.execute("SELECT id FROM items WHERE gen <= ?", (gen,)))
        extra = tuple(sorted(i for i in cached.tolist() if i not in db and i not in removed))
        missing = tuple(sorted(older - set(cached.tolist())))
        status = "stale"
        detail = f"reflects generation {gen} of {generation}; caught up from the database on open"
    else:
        extra = tuple(sorted(set(cached.tolist()) - db))
        missing = tuple(sorted(db - set(cached.tolist())))
        status, detail = "ok", ""
    mismatched: list[int] = []
    if factory.strip() == "Flat" and index.ntotal:
        inner = faiss.downcast_index(index.index)
        stored_vecs = inner.reconstruct_n(0, index.ntotal)
        wanted = [int(i) for i in cached if int(i) in db and int(i) not in bad]
        pos = {int(i): n for n, i in enumerate(cached.tolist())}
        got = store.vectors_by_id(wanted, dim) if wanted else {}
        for i in wanted:
            if i in got and not np.array_equal(got[i], stored_vecs[pos[i]]):
                mismatched.append(i)
    return CacheCheck(status, detail, gen, int(index.ntotal), missing, extra, tuple(mismatched))


def _check_media(files: dict[str, str | None], hash_media: bool) -> tuple[list[str], list[str]]:
    from .pipeline import file_hash

    missing, changed = [], []
    for p, h in files.items():
        if not os.path.exists(p):
            missing.append(p)
            continue
        if not hash_media or h is None:
            continue
        try:
            if file_hash(p) != h:
                changed.append(p)
        except OSError:
            missing.append(p)  # exists but unreadable: nothing to compare with
    return missing, changed


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _check_encoder(fp: dict, pretrained, device) -> EncoderCheck:
    enc_fp = fp.get("encoder") if isinstance(fp, dict) else None
    if fp.get("format") != "mmretrieve-index" or not isinstance(enc_fp, dict) or "preset" not in enc_fp:
        return EncoderCheck("skipped", "not a Retriever index (no encoder record)")
    from .models import create_encoder
    from .retriever import video_head_of

    try:
        enc = create_encoder(enc_fp["preset"], device=device or "cpu", pretrained=pretrained,
                             weights=fp.get("weights_path"), video_head=video_head_of(enc_fp))
    except (MMRError, OSError, ValueError) as e:
        return EncoderCheck("unavailable", f"cannot rebuild encoder {enc_fp.get('preset')!r}: {e}")
    try:
        mine = _canonical(enc.fingerprint())
        if mine != _canonical(enc_fp) or enc.fingerprint_id() != fp.get("encoder_id"):
            keys = sorted(k for k in set(mine) | set(enc_fp) if mine.get(k) != enc_fp.get(k))
            return EncoderCheck("mismatch", f"preset {enc_fp['preset']!r} now has a different fingerprint (keys: {', '.join(keys) or 'encoder_id'})")
    finally:
        del enc
    return EncoderCheck("ok", f"{enc_fp['preset']} {fp.get('encoder_id')}")


# ---------------------------------------------------------------------------------------- repair
def _repair(target: str, report: VerifyReport, *, prune_missing: bool, pretrained, device, num_workers) -> list[str]:
    from .index import UnifiedIndex
    from .index.layout import CACHE_NAME
    from .index.locking import WriterLock

    actions: list[str] = []
    cache_path = os.path.join(target, CACHE_NAME)
    lock = WriterLock(target)
    lock.acquire()  # IndexLockedError before anything is touched
    try:
        if report.cache.status in ("corrupt", "foreign") or not report.cache.ok:
            if os.path.exists(cache_path):
                aside = f"{cache_path}.bad-{int(time.time())}"
                os.replace(cache_path, aside)
                actions.append(f"moved the bad faiss cache aside to {aside}")
    finally:
        lock.release()  # UnifiedIndex.open takes it again (flock is per open file description)

    ix = UnifiedIndex.open(target)
    try:
        store = ix._store
        drop_items = sorted(set(report.orphan_items) | set(report.bad_vectors) | set(report.duplicates))
        # a file that lost a row (orphan metadata, bad vector) is re-embedded whole if it still exists
        broken = sorted(set(report.orphan_items) | set(report.bad_vectors))
        broken_paths = {h.path for h in ix.get(broken) if h.path is not None} if broken else set()
        if drop_items or report.orphan_vectors:
            with ix.batch():
                if drop_items:
                    ix.remove(drop_items)  # deletes item + vector rows, leaves tombstones for the cache
                if report.orphan_vectors:
                    store.conn.execute("DELETE FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
                                       (json.dumps(list(report.orphan_vectors)),))
            if drop_items:
                actions.append(f"removed {len(drop_items)} orphan/bad/duplicate row(s)")
            if report.orphan_vectors:
                actions.append(f"removed {len(report.orphan_vectors)} vector row(s) without metadata")
        damaged_paths = set(report.changed_media) | set(report.mixed_files) | broken_paths
        if prune_missing and report.missing_media:
            with ix.batch():
                n = sum(ix.remove_path(p) for p in report.missing_media)
            actions.append(f"removed {n} row(s) of {len(report.missing_media)} missing file(s)")
        reembed = sorted(p for p in damaged_paths if os.path.exists(p))
        if reembed:
            actions += _reembed(ix, reembed, pretrained, device, num_workers)
        ix.rebuild()
        ix._cache_gen = -1  # force save() to write a fresh, verified cache
        ix.save()
        actions.append("rebuilt and saved the faiss cache")
    finally:
        ix.close()
    return actions


def _reembed(ix, paths: list[str], pretrained, device, num_workers) -> list[str]:
    from .retriever import Retriever

    fp = ix.fingerprint
    enc_fp = fp.get("encoder") or {}
    if fp.get("format") != "mmretrieve-index" or "preset" not in enc_fp:
        return [f"cannot re-embed {len(paths)} changed file(s): the index has no encoder record"]
    # the same encoder, sampling and windows the index was built with (closes ix if that fails)
    r = Retriever.from_index(ix, device=device, pretrained=pretrained, num_workers=num_workers)
    metas = {}
    for p in paths:
        rows = ix._store.conn.execute("SELECT metadata FROM items WHERE path = ? ORDER BY id DESC LIMIT 1", (p,)).fetchone()
        metas[p] = json.loads(rows[0]) if rows else {}
    actions = []
    failed_all: list[tuple[str, str]] = []
    for p in paths:
        # drop the old rows and write the new ones in ONE transaction: a crash keeps the old rows
        with ix.batch():
            ix.remove_path(p)
            rep = r.add(p, metadata=metas[p], progress=False)
        failed_all += list(rep.failed)
    ok = len(paths) - len(failed_all)
    actions.append(f"re-embedded {ok} changed file(s)")
    for p, reason in failed_all:
        actions.append(f"removed {p}: it changed and no longer decodes ({reason})")
    return actions
