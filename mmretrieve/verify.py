"""Integrity check (and repair) of an index: vectors, metadata, search cache, encoder, media.

verify_index(path) reads a local index without taking the writer lock (a writer may be running);
it also takes an open index backend (UnifiedIndex, MilvusIndex). It asks the index for one
consistent look at its storage (:meth:`IndexBackend.check`) and reports, in a typed
:class:`VerifyReport`:

- counts (rows, files, per modality), the database generation;
- orphans: metadata rows without a vector and vector rows without metadata; vectors of the wrong size
  or with NaN/inf; duplicate entries (same path and window stored more than once);
- the faiss cache: missing / stale / corrupt (header, checksum, faiss parse) / from another database,
  and, when it reflects the current generation, ids present in SQLite but not in faiss and back, and
  (Flat factories) stored vectors that differ from the cached ones;
- the encoder: the manifest and database agree on the fingerprint (else IndexCorruptError at open),
  and the encoder rebuilt from the recorded preset still has that fingerprint (``check_encoder``);
- media: files that no longer exist, and files whose content hash differs from the stored one.

repair=True opens the index as its writer (IndexLockedError while another writer runs) and, in this
order: moves a bad faiss cache aside and removes orphan/bad/duplicate rows (one transaction; both
:meth:`IndexBackend.repair`), re-embeds changed files through the Retriever (old rows dropped and new
rows written in one transaction per file, so a crash during repair leaves the previous state),
optionally drops rows of missing media (``prune_missing``), then rebuilds and saves the faiss cache.
Damage that cannot be repaired here (manifest or database unreadable) raises IndexCorruptError
naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .embedding import file_hash
from .errors import IndexCorruptError, MMRError
from .index import CacheCheck, IndexBackend, IndexCheck, UnifiedIndex
from .index.layout import MANIFEST_NAME, leftover_siblings, read_manifest, write_manifest
from .index.locking import WriterLock
from .index.store import DB_NAME, MetadataStore
from .models import create_encoder
from .retriever import Retriever, recorded_weights, video_head_of

__all__ = ["verify_index", "VerifyReport", "CacheCheck", "EncoderCheck"]


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
    generation: int | None  # None for a backend without a write counter (Milvus)
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
    leftovers: tuple[str, ...] = ()  # .tmp-*/.old-* directories of interrupted saves beside the index
    generation_behind: int | None = None  # newest generation found in the rows, when ahead of the counter
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
        if self.generation_behind is not None:
            out.append(f"generation counter {self.generation} is behind the data "
                       f"(rows written at generation {self.generation_behind})")
        if self.leftovers:
            out.append(f"{len(self.leftovers)} leftover director(ies) of an interrupted save: {_few(self.leftovers)}")
        return out

    def __str__(self) -> str:
        lines = [
            f"index {self.path}: {self.entries} entries from {self.files} file(s) "
            + "(" + ", ".join(f"{k} {v}" for k, v in self.counts.items() if k != "total") + ")"
            + ("" if self.generation is None else f", generation {self.generation}"),
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
    path: str | os.PathLike | IndexBackend,
    *,
    repair: bool = False,
    check_encoder: bool = True,
    hash_media: bool = True,
    prune_missing: bool = False,
    pretrained: str | None = None,
    device: str | None = None,
    num_workers: int | None = 0,
) -> VerifyReport:
    """Check an index directory (or an open index backend); with repair=True also fix what can be
    fixed (see the module doc).

    ``hash_media=False`` skips reading every indexed file (only existence is checked);
    ``prune_missing`` (with repair) removes the rows of files that no longer exist;
    ``pretrained``/``device`` are used to rebuild the encoder (fingerprint check, re-embedding).
    """
    t0 = time.perf_counter()
    checks = dict(check_encoder=check_encoder, hash_media=hash_media, pretrained=pretrained, device=device)
    if isinstance(path, (str, os.PathLike)):
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        restored = _restore_manifest(target) if repair else []
        with UnifiedIndex.open(target, readonly=True, load_cache=False) as ix:  # never locks
            report = _with_leftovers(_inspect(ix, target, **checks), target)
        if not repair:
            return dataclasses.replace(report, seconds=time.perf_counter() - t0)
        # the writer lock, before anything is touched; opening also puts back an index left beside its
        # place by an interrupted save and removes the leftovers of dead savers
        with UnifiedIndex.open(target, load_cache=False) as ix:
            actions = restored + _repair(ix, report, prune_missing=prune_missing, pretrained=pretrained,
                                         device=device, num_workers=num_workers)
        if report.leftovers:
            gone = [p for p in report.leftovers if not os.path.exists(p)]
            actions.append(f"removed {len(gone)} leftover director(ies) of an interrupted save")
        with UnifiedIndex.open(target, readonly=True, load_cache=False) as ix:
            after = _with_leftovers(_inspect(ix, target, **checks), target)
    else:
        where = path.path or "<in-memory>"
        report = _inspect(path, where, **checks)
        if not repair:
            return dataclasses.replace(report, seconds=time.perf_counter() - t0)
        actions = _repair(path, report, prune_missing=prune_missing, pretrained=pretrained, device=device,
                          num_workers=num_workers)
        after = _inspect(path, where, **checks)
    return dataclasses.replace(after, repaired=tuple(actions), seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- inspection
def _inspect(ix: IndexBackend, where: str, *, check_encoder: bool, hash_media: bool, pretrained, device) -> VerifyReport:
    storage = ix.check()
    missing, changed = _check_media(storage.files, hash_media)
    encoder = _check_encoder(ix.fingerprint, pretrained, device) if check_encoder else EncoderCheck("skipped")
    return VerifyReport(
        path=where, generation=storage.generation, entries=storage.entries, files=len(storage.files),
        counts=dict(storage.counts), orphan_items=storage.orphan_items, orphan_vectors=storage.orphan_vectors,
        bad_vectors=storage.bad_vectors, duplicates=storage.duplicates, cache=storage.cache, encoder=encoder,
        missing_media=tuple(missing), changed_media=tuple(changed), mixed_files=storage.mixed_files,
        generation_behind=storage.generation_behind,
    )


def _with_leftovers(report: VerifyReport, target: str) -> VerifyReport:
    return dataclasses.replace(report, leftovers=tuple(leftover_siblings(target)))


def _check_media(files, hash_media: bool) -> tuple[list[str], list[str]]:
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
    try:
        enc = create_encoder(enc_fp["preset"], device=device or "cpu", pretrained=pretrained,
                             weights=recorded_weights(fp.get("weights_path")), video_head=video_head_of(enc_fp))
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
def _restore_manifest(target: str) -> list[str]:
    """Rewrite a manifest.json that disagrees with the database (the source of truth) or is missing or
    unparsable beside a readable database; a manifest of another format or version is left alone."""
    try:
        manifest = read_manifest(target)
    except IndexCorruptError:
        if not os.path.isfile(os.path.join(target, DB_NAME)) or _manifest_parses(os.path.join(target, MANIFEST_NAME)):
            return []  # not ours to rewrite: opening the index reports it
        manifest = None
    store = MetadataStore.connect(os.path.join(target, DB_NAME), readonly=True)  # IndexCorruptError if unreadable
    try:
        meta = store.meta()
    finally:
        store.close()
    try:
        fingerprint, dim, factory = json.loads(meta.get("fingerprint", "")), int(meta.get("dim", "")), meta.get("factory")
    except ValueError:
        return []  # a damaged meta table: opening the index names it
    if not isinstance(fingerprint, dict) or not isinstance(factory, str):
        return []
    if manifest is not None and (manifest["dim"], manifest["factory"], manifest["fingerprint"]) == (dim, factory, fingerprint):
        return []
    lock = WriterLock(target)
    lock.acquire()  # IndexLockedError while a writer runs
    try:
        write_manifest(target, dim=dim, factory=factory, fingerprint=fingerprint)
    finally:
        lock.release()
    return [f"rewrote {os.path.join(target, MANIFEST_NAME)} from {DB_NAME}"]


def _manifest_parses(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return isinstance(json.loads(f.read(1 << 20).decode("utf-8")), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _repair(ix: IndexBackend, report: VerifyReport, *, prune_missing: bool, pretrained, device, num_workers) -> list[str]:
    # a file that lost a row (orphan metadata, bad vector) is re-embedded whole if it still exists; so is
    # a file whose stored vector differs from the cached one (either copy may be the altered one)
    broken = sorted(set(report.orphan_items) | set(report.bad_vectors) | set(report.cache.mismatched_ids))
    broken_paths = {h.path for h in ix.get(broken) if h.path is not None} if broken else set()
    actions = ix.repair(IndexCheck(
        generation=report.generation, counts=report.counts, files={}, cache=report.cache,
        orphan_items=report.orphan_items, orphan_vectors=report.orphan_vectors, bad_vectors=report.bad_vectors,
        duplicates=report.duplicates, mixed_files=report.mixed_files, generation_behind=report.generation_behind))
    damaged_paths = set(report.changed_media) | set(report.mixed_files) | broken_paths
    if prune_missing and report.missing_media:
        with ix.batch():
            n = sum(ix.remove_path(p) for p in report.missing_media)
        actions.append(f"removed {n} row(s) of {len(report.missing_media)} missing file(s)")
    reembed = sorted(p for p in damaged_paths if os.path.exists(p))
    if reembed:
        actions += _reembed(ix, reembed, pretrained, device, num_workers)
    ix.rebuild()
    ix.save()
    actions.append("rebuilt and saved the faiss cache")
    return actions


def _reembed(ix: IndexBackend, paths: list[str], pretrained, device, num_workers) -> list[str]:
    fp = ix.fingerprint
    enc_fp = fp.get("encoder") or {}
    if fp.get("format") != "mmretrieve-index" or "preset" not in enc_fp:
        return [f"cannot re-embed {len(paths)} changed file(s): the index has no encoder record"]
    # the same encoder, sampling and windows the index was built with (closes ix if that fails)
    r = Retriever.from_index(ix, device=device, pretrained=pretrained, num_workers=num_workers)
    metas = {}
    for p in paths:
        rows = ix.entries(p)
        metas[p] = dict(rows[-1].metadata) if rows else {}
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
