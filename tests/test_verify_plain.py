"""verify_index on indexes filled with vectors directly (no encoder record, so no model is built):
the report's fields and wording for each damage kind, what repair does and says, and the same on an
open index object. Fast companions of test_verify.py, which checks the CLI on Retriever indexes."""
from __future__ import annotations

import os
import shutil
import sqlite3
import time

import numpy as np
import pytest

from mmretrieve.embedding import file_hash
from mmretrieve.errors import IndexCorruptError
from mmretrieve.index import Record, UnifiedIndex
from mmretrieve.verify import EncoderCheck, VerifyReport, _restore_manifest, verify_index

DIM = 8
FP = {"format": "vectors-from-elsewhere", "model": "x"}
NO_ENCODER = "not a Retriever index (no encoder record)"
REBUILT = "rebuilt and saved the faiss cache"


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def plain(tmp_path):
    """(index dir, media files): 3 files with their real content hashes (one of them in 2 windows) and
    2 text rows, saved with a current cache."""
    media = []
    for i in range(3):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(bytes([i]) * (100 + i))
        media.append(str(p))
    records = [Record(media[0], "image", content_hash=file_hash(media[0])),
               Record(media[1], "audio", start=0.0, end=10.0, content_hash=file_hash(media[1])),
               Record(media[1], "audio", start=10.0, end=20.0, content_hash=file_hash(media[1])),
               Record(media[2], "video", content_hash=file_hash(media[2])),
               Record(None, "text", metadata={"caption": "a"}), Record(None, "text", metadata={"caption": "b"})]
    index_dir = str(tmp_path / "plain.mmr")
    with UnifiedIndex.create(DIM, FP, path=index_dir) as ix:
        ix.add(_unit(len(records)), records)
        ix.save()
    return index_dir, media


def _sql(index_dir, *statements):
    conn = sqlite3.connect(os.path.join(index_dir, "meta.sqlite"), isolation_level=None)
    try:
        for stmt in statements:
            conn.execute(*stmt) if isinstance(stmt, tuple) else conn.execute(stmt)
    finally:
        conn.close()


def _search(index_dir):
    with UnifiedIndex.open(index_dir, readonly=True) as ix:
        return [[h.id for h in row] for row in ix.search(_unit(3, seed=9), k=10)]


def test_healthy_index_report(plain):
    index_dir, media = plain
    r = verify_index(index_dir)
    assert r.ok and r.problems() == [] and r.repaired == () and r.seconds > 0
    assert (r.path, r.generation, r.entries, r.files) == (index_dir, 1, 6, 3)
    assert r.counts == {"total": 6, "text": 2, "image": 1, "video": 1, "audio": 2}
    assert r.cache.status == "ok" and r.cache.generation == 1 and r.cache.ntotal == 6
    assert r.encoder == EncoderCheck("skipped", NO_ENCODER) and r.encoder.ok
    assert (r.missing_media, r.changed_media, r.mixed_files, r.leftovers, r.generation_behind) == ((), (), (), (), None)
    assert str(r).splitlines() == [
        f"index {index_dir}: 6 entries from 3 file(s) (text 2, image 1, video 1, audio 2), generation 1",
        "faiss cache: ok",
        f"encoder: skipped ({NO_ENCODER})",
        "OK: vectors, metadata, faiss cache and encoder agree",
    ]
    assert verify_index(index_dir, check_encoder=False).encoder == EncoderCheck("skipped")


def test_text_rows_without_vectors_and_stray_vectors_are_removed(plain):
    index_dir, _ = plain
    _sql(index_dir, "DELETE FROM vectors WHERE id = 5",
         ("INSERT INTO vectors (id, vector) VALUES (77, ?)", (np.ones(DIM, "<f4").tobytes(),)),
         ("INSERT INTO vectors (id, vector) VALUES (78, ?)", (np.ones(DIM, "<f4").tobytes(),)))
    r = verify_index(index_dir)
    assert not r.ok and r.orphan_items == (5,) and r.orphan_vectors == (77, 78)
    assert r.problems() == ["1 metadata row(s) without a vector: ids 5", "2 vector row(s) without metadata: ids 77, 78"]
    assert str(r).splitlines()[-2:] == [f"PROBLEM: {p}" for p in r.problems()]

    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("removed 1 orphan/bad/duplicate row(s)", "removed 2 vector row(s) without metadata", REBUILT)
    assert fixed.ok and fixed.entries == 5 and fixed.orphan_vectors == () and fixed.generation == 2  # one transaction
    assert str(fixed).splitlines()[-4:] == [f"repaired: {a}" for a in fixed.repaired] + [
        "OK: vectors, metadata, faiss cache and encoder agree"]
    assert verify_index(index_dir).ok


@pytest.mark.parametrize("blob", [np.full(DIM, np.inf, "<f4").tobytes(), b"\x00" * (4 * DIM - 4)])
def test_bad_vector_of_a_file_is_dropped_and_its_file_cannot_be_reembedded(plain, blob):
    index_dir, media = plain
    _sql(index_dir, ("UPDATE vectors SET vector = ? WHERE id = 1", (blob,)))
    r = verify_index(index_dir)
    assert r.bad_vectors == (1,) and r.problems() == ["1 vector(s) of the wrong size or with NaN/inf: ids 1"]
    assert r.cache.status == "ok"  # the cache holds the vector as it was written: only the row is bad
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("removed 1 orphan/bad/duplicate row(s)",
                              "cannot re-embed 1 changed file(s): the index has no encoder record", REBUILT)
    assert fixed.ok and fixed.entries == 5 and media[0] not in {h for h in fixed.changed_media}


def test_duplicate_window_keeps_the_newest_row(plain):
    index_dir, media = plain
    with UnifiedIndex.open(index_dir) as ix:
        [new] = ix.add(_unit(1, seed=4), [Record(media[1], "audio", start=0.0, end=10.0,
                                                  content_hash=file_hash(media[1]))])
        ix.save()
    r = verify_index(index_dir)
    assert r.duplicates == (2,) and r.problems() == ["1 duplicate row(s): ids 2"]
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("removed 1 orphan/bad/duplicate row(s)", REBUILT) and fixed.ok
    with UnifiedIndex.open(index_dir, readonly=True) as ix:
        assert [h.id for h in ix.entries(media[1])] == [3, new]


def test_corrupt_cache_is_moved_aside_and_rebuilt(plain):
    index_dir, _ = plain
    want = _search(index_dir)
    cache = os.path.join(index_dir, "vectors.faiss")
    with open(cache, "r+b") as f:
        f.truncate(40)
    r = verify_index(index_dir)
    assert r.cache.status == "corrupt" and not r.ok
    assert r.problems() == [f"faiss cache corrupt; {r.cache.detail}"] and "vectors.faiss" in r.cache.detail
    assert str(r).splitlines()[1] == f"faiss cache: corrupt ({r.cache.detail})"
    fixed = verify_index(index_dir, repair=True)
    assert len(fixed.repaired) == 2 and fixed.repaired[1] == REBUILT
    assert fixed.repaired[0].startswith(f"moved the bad faiss cache aside to {cache}.bad-")
    assert os.path.exists(fixed.repaired[0].split(" to ", 1)[1])
    assert fixed.ok and fixed.cache.status == "ok" and _search(index_dir) == want


def test_missing_cache_is_not_damage_and_repair_writes_one(plain):
    index_dir, _ = plain
    os.remove(os.path.join(index_dir, "vectors.faiss"))
    r = verify_index(index_dir)
    assert r.ok and r.cache.status == "missing"
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == (REBUILT,) and fixed.cache.status == "ok"


def test_generation_counter_behind_is_moved_forward(plain):
    index_dir, _ = plain
    _sql(index_dir, "UPDATE state SET generation = 0")
    os.remove(os.path.join(index_dir, "vectors.faiss"))
    r = verify_index(index_dir)
    assert r.generation == 0 and r.generation_behind == 1
    assert r.problems() == ["generation counter 0 is behind the data (rows written at generation 1)"]
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("moved the generation counter forward to 1", REBUILT)
    assert fixed.ok and fixed.generation_behind is None and fixed.generation == 1


def test_media_checks_missing_changed_and_mixed(plain):
    index_dir, media = plain
    os.remove(media[2])
    with open(media[0], "ab") as f:
        f.write(b"more")
    _sql(index_dir, ("UPDATE items SET content_hash = '!old' WHERE id = 3",))
    r = verify_index(index_dir)
    assert r.missing_media == (media[2],) and r.changed_media == (media[0],) and r.mixed_files == (media[1],)
    assert r.problems() == [f"1 file(s) changed since indexing: {media[0]}",
                            f"1 file(s) with rows of different contents: {media[1]}"]
    assert f"missing media: 1 file(s) no longer exist: {media[2]}" in str(r).splitlines()
    quick = verify_index(index_dir, hash_media=False)
    assert quick.changed_media == () and quick.missing_media == (media[2],) and quick.mixed_files == (media[1],)

    kept = verify_index(index_dir, repair=True)
    assert kept.repaired == ("cannot re-embed 2 changed file(s): the index has no encoder record", REBUILT)
    assert kept.entries == 6 and kept.missing_media == (media[2],)
    pruned = verify_index(index_dir, repair=True, prune_missing=True)
    assert pruned.repaired[0] == "removed 1 row(s) of 1 missing file(s)"
    assert pruned.entries == 5 and pruned.missing_media == () and pruned.counts["video"] == 0


def test_an_unreadable_file_counts_as_missing(plain, monkeypatch):
    index_dir, media = plain
    import mmretrieve.verify as verify_module

    def unreadable(path, *a, **k):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(verify_module, "file_hash", unreadable)
    r = verify_index(index_dir)
    assert r.missing_media == tuple(sorted(media)) and r.changed_media == () and r.ok


def test_a_file_without_a_recorded_hash_is_only_checked_for_existence(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"x")
    index_dir = str(tmp_path / "nohash.mmr")
    with UnifiedIndex.create(DIM, FP, path=index_dir) as ix:
        ix.add(_unit(1), [Record(str(p), "image")])
        ix.save()
    p.write_bytes(b"changed")
    r = verify_index(index_dir)
    assert r.ok and r.changed_media == () and r.files == 1


def test_leftover_directories_are_reported_and_removed(plain):
    index_dir, _ = plain
    dead = 4_000_000
    while True:
        try:
            os.kill(dead, 0)
            dead -= 1
        except ProcessLookupError:
            break
    left = f"{index_dir}.tmp-{dead}-00000001"
    shutil.copytree(index_dir, left)
    r = verify_index(index_dir)
    assert r.leftovers == (left,) and r.problems() == [f"1 leftover director(ies) of an interrupted save: {left}"]
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == (REBUILT, "removed 1 leftover director(ies) of an interrupted save")
    assert fixed.ok and not os.path.exists(left)


def test_manifest_is_rewritten_from_the_database_only_when_it_disagrees(plain):
    index_dir, _ = plain
    manifest = os.path.join(index_dir, "manifest.json")
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == (REBUILT,)  # an agreeing manifest is left alone
    os.remove(manifest)
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == (f"rewrote {manifest} from meta.sqlite", REBUILT) and fixed.ok
    with open(manifest, "w") as f:
        f.write('["not", "a", "manifest"]')  # no JSON object: as good as unparsable, rewritten
    assert verify_index(index_dir, repair=True).repaired[0] == f"rewrote {manifest} from meta.sqlite"
    other = '{"format": "another-tool", "version": 9}'
    with open(manifest, "w") as f:
        f.write(other)  # a manifest of another format is not ours to rewrite: opening reports it
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        verify_index(index_dir, repair=True)
    with open(manifest) as f:
        assert f.read() == other


def test_a_damaged_meta_table_is_not_used_to_rewrite_the_manifest(plain):
    index_dir, _ = plain
    os.remove(os.path.join(index_dir, "manifest.json"))
    _sql(index_dir, "UPDATE meta SET value = '[1, 2]' WHERE key = 'fingerprint'")
    with pytest.raises(IndexCorruptError):
        verify_index(index_dir, repair=True)
    assert not os.path.exists(os.path.join(index_dir, "manifest.json"))
    _sql(index_dir, "UPDATE meta SET value = 'not json' WHERE key = 'fingerprint'")
    with pytest.raises(IndexCorruptError):
        verify_index(index_dir, repair=True)
    assert not os.path.exists(os.path.join(index_dir, "manifest.json"))
    for key in ("fingerprint", "dim"):  # a meta row missing altogether: the same refusal, no crash
        _sql(index_dir, ("INSERT OR REPLACE INTO meta (key, value) VALUES ('fingerprint', ?)", ('{"model": "x"}',)),
             f"DELETE FROM meta WHERE key = '{key}'")
        with pytest.raises(IndexCorruptError):
            verify_index(index_dir, repair=True)
        assert not os.path.exists(os.path.join(index_dir, "manifest.json"))


def test_an_open_index_object_is_verified_and_repaired_in_place(plain):
    index_dir, _ = plain
    _sql(index_dir, ("INSERT INTO vectors (id, vector) VALUES (90, ?)", (np.ones(DIM, "<f4").tobytes(),)))
    with UnifiedIndex.open(index_dir) as ix:
        r = verify_index(ix)
        assert r.path == index_dir and r.orphan_vectors == (90,) and r.leftovers == ()
        fixed = verify_index(ix, repair=True)
        assert fixed.repaired == ("removed 1 vector row(s) without metadata", REBUILT) and fixed.ok
    memory = UnifiedIndex.create(DIM, FP)
    memory.add(_unit(2), [Record(None, "text"), Record(None, "image")])
    r = verify_index(memory)
    assert r.path == "<in-memory>" and r.ok and r.cache.status == "missing" and r.entries == 2
    memory.close()


def test_problem_wording_for_cache_ids_and_long_lists():
    from mmretrieve.index import CacheCheck

    base = dict(path="/i.mmr", generation=4, entries=9, files=3, counts={"total": 9}, orphan_items=(),
                orphan_vectors=(), bad_vectors=(), duplicates=(), encoder=EncoderCheck("ok"))
    r = VerifyReport(cache=CacheCheck("ok", generation=4, missing_ids=(3, 4), extra_ids=(70,), mismatched_ids=(5,)),
                     **base)
    assert r.problems() == ["faiss cache ok; 2 id(s) missing from faiss; 1 id(s) in faiss but not in SQLite; "
                            "1 cached vector(s) differ from the stored ones"]
    r = VerifyReport(cache=CacheCheck("ok"), **{**base, "duplicates": tuple(range(1, 8))})
    assert r.problems() == ["7 duplicate row(s): ids 1, 2, 3, 4, 5 (+2 more)"]
    r = VerifyReport(cache=CacheCheck("ok"), **{**base, "duplicates": tuple(range(1, 6))})
    assert r.problems() == ["5 duplicate row(s): ids 1, 2, 3, 4, 5"]
    r = VerifyReport(cache=CacheCheck("stale", generation=2),
                     **{**base, "encoder": EncoderCheck("mismatch", "keys: image")})
    assert r.problems() == ["encoder mismatch: keys: image"]
    assert str(r).splitlines()[2] == "encoder: mismatch (keys: image)"
    assert VerifyReport(cache=CacheCheck("missing"), **base).ok
    assert EncoderCheck("skipped").ok and EncoderCheck("ok").ok
    assert not EncoderCheck("mismatch").ok and not EncoderCheck("unavailable").ok
    milvus_like = VerifyReport(cache=CacheCheck("ok"), **{**base, "generation": None})
    assert str(milvus_like).splitlines()[0] == "index /i.mmr: 9 entries from 3 file(s) ()"


def test_cache_newer_than_the_database_is_corrupt(plain):
    """The counter says generation 1, the cache says 2 (the database was put back from an older copy
    while the cache stayed): the cache cannot be trusted, repair moves it aside and the counter on."""
    index_dir, media = plain
    with UnifiedIndex.open(index_dir) as ix:
        ix.remove_path(media[0])
        ix.save()
    _sql(index_dir, "UPDATE state SET generation = 1")
    r = verify_index(index_dir)
    assert r.cache.status == "corrupt" and r.cache.detail == "cache claims generation 2, newer than the database's 1"
    assert r.generation_behind == 2
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired[0].startswith("moved the bad faiss cache aside to ")
    assert fixed.repaired[1:] == ("moved the generation counter forward to 2", REBUILT)
    assert fixed.ok and fixed.generation == 2 and fixed.entries == 5


def test_a_skipped_encoder_check_without_detail_prints_bare(plain):
    index_dir, _ = plain
    assert str(verify_index(index_dir, check_encoder=False)).splitlines()[2] == "encoder: skipped"


@pytest.mark.parametrize("fingerprint", [
    # another tool's format whose encoder block happens to name a preset
    {"format": "another-tool", "encoder": {"preset": "tiny-random"}},
    # a Retriever-format fingerprint whose encoder block names no preset: nothing to rebuild
    {"format": "mmretrieve-index", "encoder": {"dim": DIM}},
], ids=["another-format", "no-preset"])
def test_an_encoder_block_that_cannot_be_rebuilt_is_skipped_and_never_used_to_reembed(tmp_path, fingerprint):
    """The encoder check is skipped (not a crash) and repair refuses to guess an encoder for a changed file."""
    p = tmp_path / "a.bin"
    p.write_bytes(b"first")
    index_dir = str(tmp_path / "other.mmr")
    with UnifiedIndex.create(DIM, fingerprint, path=index_dir) as ix:
        ix.add(_unit(1), [Record(str(p), "image", content_hash=file_hash(str(p)))])
        ix.save()
    p.write_bytes(b"second")
    r = verify_index(index_dir)
    assert r.encoder == EncoderCheck("skipped", NO_ENCODER) and r.changed_media == (str(p),)
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("cannot re-embed 1 changed file(s): the index has no encoder record", REBUILT)


def test_restoring_the_manifest_only_reads_the_database(plain):
    """The database is opened read-only: one in rollback-journal mode (as a copy made by another tool
    may be) is not switched to WAL or otherwise written while the manifest is rewritten from it."""
    index_dir, _ = plain
    db = os.path.join(index_dir, "meta.sqlite")
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    conn.close()
    os.remove(os.path.join(index_dir, "manifest.json"))
    with open(db, "rb") as f:
        before = f.read()
    assert _restore_manifest(index_dir) == [f"rewrote {os.path.join(index_dir, 'manifest.json')} from meta.sqlite"]
    with open(db, "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(index_dir)) == ["manifest.json", "meta.sqlite", "vectors.faiss", "writer.lock"]
    assert verify_index(index_dir).ok


def test_without_repair_a_missing_manifest_is_reported_not_rewritten(plain):
    index_dir, _ = plain
    manifest = os.path.join(index_dir, "manifest.json")
    os.remove(manifest)
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        verify_index(index_dir)
    assert not os.path.exists(manifest)


def _timed(*args, **kwargs):
    t0 = time.perf_counter()
    r = verify_index(*args, **kwargs)
    return r, time.perf_counter() - t0


def test_seconds_is_the_time_the_call_took(plain):
    index_dir, _ = plain
    for kwargs in ({}, {"repair": True}):
        r, took = _timed(index_dir, **kwargs)
        assert 0 < r.seconds <= took
        with UnifiedIndex.open(index_dir) as ix:
            r, took = _timed(ix, **kwargs)
            assert 0 < r.seconds <= took


def test_files_after_a_missing_one_are_still_checked(plain):
    index_dir, media = plain
    os.remove(media[0])  # first in path order
    with open(media[2], "ab") as f:
        f.write(b"more")
    r = verify_index(index_dir)
    assert r.missing_media == (media[0],) and r.changed_media == (media[2],)
    assert r.problems() == [f"1 file(s) changed since indexing: {media[2]}"]


def test_only_the_repair_itself_opens_the_index_as_its_writer(plain, monkeypatch):
    """verify reads without the writer lock and without loading the faiss cache: before the repair
    and in the check after it; only the repair opens the index as its writer."""
    index_dir, _ = plain
    real_open = UnifiedIndex.open.__func__
    opened = []

    def spy(cls, path, **kwargs):
        opened.append((bool(kwargs.get("readonly", False)), bool(kwargs.get("load_cache", True))))
        return real_open(cls, path, **kwargs)

    monkeypatch.setattr(UnifiedIndex, "open", classmethod(spy))
    assert verify_index(index_dir).ok and opened == [(True, False)]
    opened.clear()
    assert verify_index(index_dir, repair=True).ok
    assert opened == [(True, False), (False, False), (True, False)]


def test_an_open_index_object_is_pruned_of_missing_files_and_every_report_names_it(plain):
    index_dir, media = plain
    os.remove(media[2])
    fixed = verify_index(index_dir, repair=True)
    assert fixed.path == index_dir and fixed.missing_media == (media[2],)
    with UnifiedIndex.open(index_dir) as ix:
        pruned = verify_index(ix, repair=True, prune_missing=True)
        assert pruned.repaired == ("removed 1 row(s) of 1 missing file(s)", REBUILT)
        assert pruned.path == index_dir and pruned.missing_media == () and pruned.entries == 5
