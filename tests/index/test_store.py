"""MetadataStore, the SQLite source of truth of an index: schema, transactions, reads, integrity
queries and the exact errors for damaged databases."""
from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index.store import DB_NAME, PAGE_SIZE, SCHEMA_VERSION, MetadataStore, is_corruption

DIM = 4
FP = {"b": 1, "a": [2, 3]}


def _row(path, modality="image", start=None, end=None, chash="h", mtime=1.5, size=10, meta=None):
    return (path, modality, start, end, chash, mtime, size, json.dumps(meta or {}))


def _vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _store(path=None):
    return MetadataStore.create(path, dim=DIM, factory="Flat", fingerprint=FP, uuid="u-1")


def _filled(path=None):
    """A store with 5 rows written in three transactions (generations 1, 2, 3)."""
    s = _store(path)
    with s.transaction():
        s.insert([_row("/a.jpg"), _row("/b.wav", "audio", 0.0, 10.0, "hb"), _row("/b.wav", "audio", 10.0, 20.0, "hb")],
                 _vecs(3))
    with s.transaction():
        s.insert([_row("/c.txt", "text", meta={"k": "v"})], _vecs(1, seed=1))
    with s.transaction():
        s.insert([_row(None, "text")], _vecs(1, seed=2))
    return s


def _sql(db, *statements):
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for stmt in statements:
            conn.execute(*stmt) if isinstance(stmt, tuple) else conn.execute(stmt)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------- creating
def test_create_records_meta_and_starts_at_generation_zero():
    s = _store()
    assert s.meta() == {"schema_version": str(SCHEMA_VERSION), "dim": str(DIM), "factory": "Flat",
                        "fingerprint": json.dumps(FP, sort_keys=True), "uuid": "u-1"}
    assert s.generation() == 0 and s.data_generation() == 0
    assert s.count() == 0 and s.max_id() == 0 and s.paths() == [] and s.all_ids().tolist() == []
    assert s.location == ":memory:" and not s.readonly and not s.in_transaction
    s.close()


def test_a_file_store_uses_wal_full_sync_and_large_pages(tmp_path):
    db = str(tmp_path / DB_NAME)
    s = _store(db)
    pragma = lambda name: s.conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("page_size") == PAGE_SIZE == 65536
    assert pragma("synchronous") == 2  # FULL
    assert pragma("busy_timeout") == 10000
    assert pragma("mmap_size") > 0
    s.close()
    r = MetadataStore.connect(db, readonly=True)
    assert r.readonly and r.location == db and r.meta()["uuid"] == "u-1"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        r.conn.execute("UPDATE meta SET value = 'x' WHERE key = 'uuid'")
    r.close()


# ---------------------------------------------------------------------------------------- transactions
def test_each_transaction_bumps_the_generation_once_and_stamps_its_rows():
    s = _filled()
    assert s.generation() == 3
    assert s.conn.execute("SELECT id, gen FROM items ORDER BY id").fetchall() == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 3)]
    with s.transaction():
        with s.transaction():  # nested: joins the outer one, no second bump
            assert s.in_transaction
        s.insert([_row("/d.jpg")], _vecs(1))
    assert s.generation() == 4 and not s.in_transaction
    with s.transaction(bump=False):
        s.set_meta("factory", "HNSW32")
    assert s.generation() == 4 and s.get_meta("factory") == "HNSW32"
    s.close()


def test_an_error_inside_a_nested_transaction_rolls_back_the_whole_transaction():
    s = _filled()
    with pytest.raises(KeyError, match="boom"):
        with s.transaction():
            s.insert([_row("/e.jpg")], _vecs(1))
            with s.transaction():
                s.delete([1])
                raise KeyError("boom")
    assert s.generation() == 3 and s.count() == 5 and not s.in_transaction
    assert s.ids_for_path("/e.jpg") == [] and s.removed_since(0).tolist() == []
    with s.transaction():  # usable afterwards: the next write is generation 4
        s.insert([_row("/e.jpg")], _vecs(1))
    assert s.generation() == 4
    s.close()


def test_a_read_only_store_refuses_to_open_a_transaction(tmp_path):
    db = str(tmp_path / DB_NAME)
    _filled(db).close()
    r = MetadataStore.connect(db, readonly=True)
    with pytest.raises(RuntimeError, match="^read-only store$"):
        with r.transaction():
            pass
    assert not r.in_transaction
    r.close()


def test_snapshot_is_one_read_transaction_and_nests(tmp_path):
    db = str(tmp_path / DB_NAME)
    w = _filled(db)
    r = MetadataStore.connect(db, readonly=True)
    with r.snapshot():
        assert r.in_transaction and r.count() == 5
        with w.transaction():
            w.insert([_row("/late.jpg")], _vecs(1))
        with r.snapshot():  # nested: the same snapshot
            assert r.count() == 5 and r.generation() == 3
        assert r.in_transaction
    assert not r.in_transaction
    assert r.count() == 6 and r.generation() == 4
    with pytest.raises(ValueError, match="inside"):  # a body that raises still ends the read transaction
        with r.snapshot():
            raise ValueError("inside")
    assert not r.in_transaction and r.count() == 6
    r.close()
    w.close()


# ---------------------------------------------------------------------------------------- reads
def test_reads_return_exactly_the_stored_rows():
    s = _filled()
    assert s.count() == 5
    assert s.count(("modality = ?", ["audio"])) == 2
    assert s.counts_by_modality() == {"image": 1, "audio": 2, "text": 2}
    assert s.filtered_ids(("modality IN (?, ?)", ["text", "image"])).tolist() == [1, 4, 5]
    assert s.filtered_ids(("modality = ?", ["audio"])).dtype == np.int64
    assert s.all_ids().dtype == np.int64 and s.all_ids().tolist() == [1, 2, 3, 4, 5]
    assert s.ids_for_path("/b.wav") == [2, 3] and s.ids_for_path("/nope") == []
    assert s.file_state("/b.wav") == ("hb", 1.5, 10) and s.file_state("/nope") is None
    assert s.paths() == ["/a.jpg", "/b.wav", "/c.txt"]
    assert s.path_rows("/b.wav") == [(2, "/b.wav", "audio", 0.0, 10.0, "{}"), (3, "/b.wav", "audio", 10.0, 20.0, "{}")]
    assert s.hit_rows([4, 99, 1]) == {1: (1, "/a.jpg", "image", None, None, "{}"),
                                      4: (4, "/c.txt", "text", None, None, '{"k": "v"}')}
    assert s.hit_rows([]) == {}
    s.close()


def test_vectors_round_trip_bit_exact_in_every_read():
    s = _store()
    vecs = _vecs(4)
    with s.transaction():
        ids = s.insert([_row(f"/{i}.jpg") for i in range(4)], vecs)
    assert ids == [1, 2, 3, 4]
    got = s.vectors_by_id([3, 1, 42], DIM)
    assert sorted(got) == [1, 3] and np.array_equal(got[3], vecs[2]) and np.array_equal(got[1], vecs[0])
    found, matrix = s.vectors_matrix(np.array([4, 2, 77]), DIM)
    assert found.tolist() == [2, 4] and matrix.dtype == np.float32 and np.array_equal(matrix, vecs[[1, 3]])
    assert found.dtype == np.int64
    chunks = list(s.iter_vectors(DIM, chunk=3))
    assert [c[0].tolist() for c in chunks] == [[1, 2, 3], [4]] and all(c[0].dtype == np.int64 for c in chunks)
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), vecs)
    s.close()


def test_iter_vectors_since_a_generation_or_for_given_ids():
    s = _filled()
    assert [ids.tolist() for ids, _ in s.iter_vectors(DIM, since_gen=1)] == [[4, 5]]
    assert [ids.tolist() for ids, _ in s.iter_vectors(DIM, since_gen=3)] == []
    # ids in the given order, missing ones skipped, a chunk with none found yields nothing
    out = [(ids.tolist(), ids.dtype, v.shape) for ids, v in s.iter_vectors(DIM, ids=np.array([5, 2, 90, 91, 1]), chunk=2)]
    assert out == [([5, 2], np.int64, (2, DIM)), ([1], np.int64, (1, DIM))]
    _, v = next(s.iter_vectors(DIM, ids=np.array([4])))
    assert np.array_equal(v[0], _vecs(1, seed=1)[0])
    s.close()


def test_vectors_without_a_row_are_not_live():
    s = _filled()
    with s.transaction():
        s.conn.execute("INSERT INTO vectors (id, vector) VALUES (50, ?)", (np.ones(DIM, "<f4").tobytes(),))
    assert [ids.tolist() for ids, _ in s.iter_vectors(DIM)] == [[1, 2, 3, 4, 5]]
    assert s.orphan_vector_ids() == (50,) and s.bad_vector_ids(DIM) == ()
    s.close()


def test_a_vector_of_the_wrong_size_is_named_by_id(tmp_path):
    s = _filled()
    with s.transaction():
        s.conn.execute("UPDATE vectors SET vector = ? WHERE id = 2", (np.ones(DIM - 1, "<f4").tobytes(),))
    where = ":memory:: vector of id 2 has the wrong size"
    with pytest.raises(IndexCorruptError, match=f"^{where}$"):
        s.vectors_by_id([1, 2], DIM)
    with pytest.raises(IndexCorruptError, match=f"^{where}$"):
        s.vectors_matrix(np.array([1, 2, 3]), DIM)
    with pytest.raises(IndexCorruptError, match=f"^{where}$"):
        list(s.iter_vectors(DIM))
    with s.transaction():  # a blob that is not bytes at all
        s.conn.execute("UPDATE vectors SET vector = 'text' WHERE id = 2")
    with pytest.raises(IndexCorruptError, match=f"^{where}$"):
        s.vectors_matrix(np.array([1, 2]), DIM)
    assert s.vectors_matrix(np.array([1, 3]), DIM)[0].tolist() == [1, 3]
    s.close()



def test_a_dimension_one_store_reads_rows_one_at_a_time_and_names_a_bad_one():
    """With one float32 per vector a single row is 4 bytes: a row whose vector is not bytes at all
    (text, a number) must still be refused, not read as some 4 bytes."""
    s = MetadataStore.create(None, dim=1, factory="Flat", fingerprint=FP, uuid="u-1")
    vals = np.array([[0.5], [-2.25], [3.0]], dtype=np.float32)
    with s.transaction():
        assert s.insert([_row(f"/{i}.jpg") for i in range(3)], vals) == [1, 2, 3]
    for i in (1, 2, 3):
        found, matrix = s.vectors_matrix(np.array([i]), 1)
        assert found.tolist() == [i] and matrix.tolist() == [vals[i - 1].tolist()]
    for bad in ("'abcd'", "1234"):  # text, an integer
        with s.transaction():
            s.conn.execute(f"UPDATE vectors SET vector = {bad} WHERE id = 2")
        with pytest.raises(IndexCorruptError, match="^:memory:: vector of id 2 has the wrong size$"):
            s.vectors_matrix(np.array([2]), 1)
        assert s.vectors_matrix(np.array([3]), 1)[1].tolist() == [[3.0]]
    s.close()


# ---------------------------------------------------------------------------------------- writes
def test_delete_tombstones_live_rows_at_the_current_generation():
    s = _filled()
    with s.transaction():
        assert s.delete([2, 999, 2, 5]) == 2
    assert s.generation() == 4
    assert s.all_ids().tolist() == [1, 3, 4]
    assert s.conn.execute("SELECT id, gen FROM removed ORDER BY id").fetchall() == [(2, 4), (5, 4)]
    assert s.vectors_by_id([2, 5], DIM) == {}
    assert s.removed_since(3).tolist() == [2, 5] and s.removed_since(4).tolist() == []
    assert s.removed_since(3).dtype == np.int64
    with s.transaction():
        assert s.delete([999]) == 0 and s.delete([]) == 0
    assert s.data_generation() == 4  # the tombstones are the newest data
    with s.transaction():  # ids are never reused after a delete
        assert s.insert([_row("/z.jpg")], _vecs(1)) == [6]
    assert s.max_id() == 6
    s.close()


def test_insert_stores_little_endian_float32():
    s = _store()
    with s.transaction():
        s.insert([_row("/x.jpg")], np.array([[1.0, -2.0, 0.5, 3.0]], dtype=">f8"))
    (blob,) = s.conn.execute("SELECT vector FROM vectors").fetchone()
    assert blob == np.array([1.0, -2.0, 0.5, 3.0], "<f4").tobytes()
    s.close()


def test_meta_entries_and_uuid():
    s = _store()
    with s.transaction(bump=False):
        s.put_meta("tuning", '{"nprobe": 4}')
        s.put_meta("tuning", '{"nprobe": 8}')
        s.set_uuid("u-2")
        s.set_meta("no-such-key", "ignored")  # set_meta only updates existing entries
    assert s.get_meta("tuning") == '{"nprobe": 8}' and s.get_meta("uuid") == "u-2"
    assert s.get_meta("no-such-key") is None
    s.close()


# ---------------------------------------------------------------------------------------- integrity
def test_integrity_queries_find_exactly_the_damage():
    s = _filled()
    with s.transaction():
        s.conn.execute("DELETE FROM vectors WHERE id = 1")  # row without vector
        s.conn.execute("UPDATE vectors SET vector = ? WHERE id = 3",
                       (np.array([np.nan, 0, 0, 0], "<f4").tobytes(),))
        s.conn.execute("UPDATE vectors SET vector = ? WHERE id = 4",
                       (np.array([np.inf, 0, 0, 0], "<f4").tobytes(),))
        s.conn.execute("UPDATE vectors SET vector = ? WHERE id = 5", (b"\x00" * (4 * DIM + 4),))
        # the same window of /b.wav twice, and the same path under another modality (not a duplicate)
        s.insert([_row("/b.wav", "audio", 0.0, 10.0, "hb"), _row("/b.wav", "video", 0.0, 10.0, "hb"),
                  _row(None, "text")], _vecs(3))
        s.insert([_row("/a.jpg", chash="other")], _vecs(1))
    assert s.orphan_item_ids() == (1,)
    assert s.orphan_vector_ids() == ()
    assert s.bad_vector_ids(DIM) == (3, 4, 5)
    assert s.duplicate_ids() == (1, 2)  # /a.jpg (id 1, newer 9) and /b.wav [0, 10] (id 2, newer 6)
    files, mixed = s.file_hashes()
    assert files == {"/a.jpg": "other", "/b.wav": "hb", "/c.txt": "h"} and mixed == ("/a.jpg",)
    s.close()


def test_a_missing_content_hash_beside_a_recorded_one_is_mixed():
    s = _store()
    with s.transaction():
        s.insert([_row("/v.mp4", "video", 0.0, 1.0, None), _row("/v.mp4", "video", 1.0, 2.0, "hv"),
                  _row("/w.mp4", "video", 0.0, 1.0, None)], _vecs(3))
    assert s.file_hashes() == ({"/v.mp4": "hv", "/w.mp4": None}, ("/v.mp4",))
    s.close()


def test_generation_counter_moves_only_forward():
    s = _filled()
    assert s.ids_up_to(1) == {1, 2, 3} and s.ids_up_to(0) == set() and s.ids_up_to(3) == {1, 2, 3, 4, 5}
    with s.transaction(bump=False):
        s.conn.execute("UPDATE state SET generation = 1")
    assert s.generation() == 1 and s.data_generation() == 3
    with s.transaction(bump=False):
        s.raise_generation(7)
    assert s.generation() == 7
    with s.transaction(bump=False):
        s.raise_generation(2)
    assert s.generation() == 7
    s.close()


def test_delete_vector_rows_drops_only_the_given_vectors():
    s = _filled()
    with s.transaction():
        s.delete_vector_rows([2, 4, 77])
    assert sorted(s.vectors_by_id([1, 2, 3, 4, 5], DIM)) == [1, 3, 5]
    assert s.count() == 5 and s.orphan_item_ids() == (2, 4)
    s.close()


# ---------------------------------------------------------------------------------------- files
def test_backup_is_a_consistent_wal_copy_under_an_optional_new_uuid(tmp_path):
    s = _filled(str(tmp_path / "src.sqlite"))
    for name, uuid in (("same.sqlite", None), ("new.sqlite", "u-9")):
        dst = str(tmp_path / name)
        s.backup_to(dst, uuid=uuid)
        c = MetadataStore.connect(dst, readonly=True)
        assert c.meta()["uuid"] == (uuid or "u-1")
        assert c.all_ids().tolist() == [1, 2, 3, 4, 5] and c.generation() == 3
        assert c.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        c.close()
        assert not os.path.exists(dst + "-wal") or os.path.getsize(dst + "-wal") == 0
    s.close()


def test_checkpoint_moves_committed_pages_into_the_database_file(tmp_path):
    db = str(tmp_path / DB_NAME)
    s = _filled(db)
    before = os.path.getsize(db)
    s.checkpoint()
    assert os.path.getsize(db) > before
    r = MetadataStore.connect(db, readonly=True)
    r.checkpoint()  # a reader never checkpoints (and does not fail)
    assert r.count() == 5
    r.close()
    s.close()
    m = _filled()
    m.checkpoint()  # nothing to do in memory
    assert m.count() == 5
    m.close()


# ---------------------------------------------------------------------------------------- damaged files
def test_a_missing_database_is_named(tmp_path):
    db = str(tmp_path / DB_NAME)
    with pytest.raises(IndexCorruptError, match=f"^{db}: metadata database is missing$"):
        MetadataStore.connect(db, readonly=True)


@pytest.mark.parametrize("readonly", [True, False])
def test_a_file_that_is_not_a_database_is_named(tmp_path, readonly):
    db = str(tmp_path / DB_NAME)
    with open(db, "wb") as f:
        f.write(b"this is not an SQLite file" * 200)
    with pytest.raises(IndexCorruptError, match=f"^{db}: not a readable mmretrieve metadata database "):
        MetadataStore.connect(db, readonly=readonly)


def test_missing_tables_are_listed(tmp_path):
    db = str(tmp_path / DB_NAME)
    _filled(db).close()
    _sql(db, "DROP TABLE removed", "DROP TABLE vectors")
    with pytest.raises(IndexCorruptError, match=r"tables missing: \['removed', 'vectors'\]$"):
        MetadataStore.connect(db, readonly=True)


def test_another_schema_version_is_refused(tmp_path):
    db = str(tmp_path / DB_NAME)
    _filled(db).close()
    _sql(db, ("UPDATE meta SET value = '2' WHERE key = 'schema_version'",))
    with pytest.raises(IndexCorruptError, match=f"^{db}: schema version '2', this mmretrieve reads 1$"):
        MetadataStore.connect(db, readonly=False)


def test_a_generation_that_is_not_one_integer_is_refused(tmp_path):
    db = str(tmp_path / DB_NAME)
    _filled(db).close()
    s = MetadataStore.connect(db, readonly=True)
    assert s.generation_and_meta("factory") == (3, "Flat") and s.generation_and_meta("nothing") == (3, None)
    s.close()
    _sql(db, ("UPDATE state SET generation = 'seven'",))
    s = MetadataStore.connect(db, readonly=True)
    with pytest.raises(IndexCorruptError, match=r"table state holds \('seven',\), expected one integer generation"):
        s.generation()
    with pytest.raises(IndexCorruptError, match=rf"^{db}: table state holds \('seven', 'Flat'\), expected one integer generation$"):
        s.generation_and_meta("factory")
    s.close()
    _sql(db, "DELETE FROM state")
    s = MetadataStore.connect(db, readonly=True)
    with pytest.raises(IndexCorruptError, match="table state holds None"):
        s.generation()
    with pytest.raises(IndexCorruptError, match=rf"^{db}: table state holds None, expected one integer generation$"):
        s.generation_and_meta("plan")
    s.close()


def _corrupt_a_page(db: str) -> None:
    """Overwrite the cell pointers of a table page: SQLite's quick_check reports it (without raising)."""
    with open(db, "r+b") as f:
        f.seek(PAGE_SIZE * 3 + 8)
        f.write(b"\xff\xff\xff\xff")


def _big(db: str) -> None:
    s = MetadataStore.create(db, dim=512, factory="Flat", fingerprint=FP, uuid="u")
    with s.transaction():
        s.insert([_row(f"/{i}.jpg") for i in range(300)], np.ones((300, 512), np.float32))
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()


def test_a_damaged_page_fails_the_integrity_check(tmp_path):
    db = str(tmp_path / DB_NAME)
    _big(db)
    _corrupt_a_page(db)
    with pytest.raises(IndexCorruptError, match=f"^{db}: SQLite integrity check failed: "):
        MetadataStore.connect(db, readonly=True)


def test_check_full_false_skips_the_page_scan(tmp_path):
    """check(full=False) is the cheap check of large databases: tables and schema version only."""
    db = str(tmp_path / DB_NAME)
    _big(db)
    s = MetadataStore.connect(db, readonly=True)
    _corrupt_a_page(db)
    s.check(full=False)  # does not read the damaged page
    with pytest.raises(IndexCorruptError, match="integrity check failed"):
        s.check(full=True)
    s.close()


def test_is_corruption_tells_damage_from_contention():
    assert is_corruption(sqlite3.DatabaseError("file is not a database"))
    assert is_corruption(sqlite3.OperationalError("database disk image is malformed"))
    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    assert not is_corruption(ValueError("malformed"))


def test_requests_of_more_than_one_chunk_of_ids_are_answered_whole():
    """Id lists are sent to SQLite in chunks; rows found in the first and the last chunk (and none in
    between) all count."""
    s = _store()
    with s.transaction():
        s.insert([_row(f"/{i}.jpg") for i in range(3)], _vecs(3))
    ids = [1] + list(range(1000, 101_000)) + [3]
    assert sorted(s.vectors_by_id(ids, DIM)) == [1, 3]
    assert sorted(s.hit_rows(ids)) == [1, 3]
    assert [chunk.tolist() for chunk, _ in s.iter_vectors(DIM, ids=np.array(ids))] == [[1], [3]]
    with s.transaction():
        s.delete_vector_rows(ids)
    assert s.orphan_item_ids() == (1, 3)
    with s.transaction():
        assert s.delete(ids) == 2
    assert s.all_ids().tolist() == [2] and sorted(s.removed_since(0).tolist()) == [1, 3]
    s.close()


def test_a_store_is_usable_from_other_threads(tmp_path):
    """Searches and writes of one index run on several threads (the server, batch readers)."""
    from concurrent.futures import ThreadPoolExecutor

    db = str(tmp_path / DB_NAME)
    w = _filled(db)
    r = MetadataStore.connect(db, readonly=True)
    m = _filled()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(r.count).result() == 5
        assert pool.submit(m.count).result() == 5
        assert pool.submit(lambda: w.delete_vector_rows([5])).result() is None
    w.close()
    w2 = MetadataStore.connect(db, readonly=False)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(w2.orphan_item_ids).result() == (5,)
    for s in (w2, r, m):
        s.close()


def test_check_runs_on_an_in_memory_store():
    s = _filled()
    s.check()
    s.check(full=True)
    with s.transaction(bump=False):
        s.conn.execute("DROP TABLE removed")
    with pytest.raises(IndexCorruptError, match=r"^:memory:: tables missing: \['removed'\]$"):
        s.check()
    s.close()


# ---------------------------------------------------------------------------------- float16 storage
def _half(path):
    return MetadataStore.create(path, dim=DIM, factory="Flat", fingerprint=FP, uuid="u-1", vector_dtype="float16")


def test_float16_store_keeps_its_precision_across_reopening(tmp_path):
    db = str(tmp_path / DB_NAME)
    vecs = _vecs(3) * np.float32(1000.0)
    s = _half(db)
    assert s.vector_dtype == "float16" and s.get_meta("vector_dtype") == "float16"
    with s.transaction():
        ids = s.insert([_row(f"/{i}.jpg") for i in range(3)], vecs)
    s.close()
    again = MetadataStore.connect(db, readonly=True)
    assert again.vector_dtype == "float16"
    got = again.vectors_by_id(ids, DIM)
    rounded = vecs.astype(np.float16).astype(np.float32)
    assert not np.array_equal(rounded, vecs)  # the rounding is visible at this scale
    for n, i in enumerate(ids):
        assert got[i].dtype == np.float32 and np.array_equal(got[i], rounded[n])
    found, matrix = again.vectors_matrix(np.asarray(ids), DIM)
    assert matrix.dtype == np.float32 and np.array_equal(matrix, rounded)


def test_a_float32_store_reads_float32_and_takes_any_finite_value(tmp_path):
    s = _store(str(tmp_path / DB_NAME))
    big = np.full((1, DIM), 1e6, np.float32)
    with s.transaction():
        (i,) = s.insert([_row("/big.jpg")], big)
    assert s.vector_dtype == "float32" and s.get_meta("vector_dtype") in (None, "float32")
    got = s.vectors_by_id([i], DIM)[i]
    assert got.dtype == np.float32 and np.array_equal(got, big[0])


def test_float16_store_refuses_values_beyond_its_range_and_keeps_what_it_had(tmp_path):
    s = _half(str(tmp_path / DB_NAME))
    edge = np.full((1, DIM), 65504.0, np.float32)  # the largest float16 is accepted
    with s.transaction():
        (i,) = s.insert([_row("/edge.jpg")], edge)
    assert np.array_equal(s.vectors_by_id([i], DIM)[i], edge[0])
    beyond = np.full((1, DIM), 70000.0, np.float32)
    with pytest.raises(ValueError, match=r"^" + f"{s.location}: vectors with components beyond the float16 range "
                       r"\(65504\) cannot be stored in an index created with vector_dtype='float16'$"):
        with s.transaction():
            s.insert([_row("/beyond.jpg")], beyond)
    assert s.count() == 1 and s.paths() == ["/edge.jpg"]
    with s.transaction():
        assert s.insert([], np.zeros((0, DIM), np.float32)) == []


def test_an_unknown_vector_dtype_in_meta_is_corruption(tmp_path):
    db = str(tmp_path / DB_NAME)
    _half(db).close()
    _sql(db, ("UPDATE meta SET value = 'int8' WHERE key = 'vector_dtype'",))
    with pytest.raises(IndexCorruptError, match=r"^" + f"{db}: meta vector_dtype='int8' is not one of "
                       r"\['float16', 'float32'\]$"):
        MetadataStore.connect(db, readonly=True)
    with pytest.raises(ValueError, match=r"^vector_dtype='int8' must be one of \['float16', 'float32'\]$"):
        MetadataStore.create(None, dim=DIM, factory="Flat", fingerprint=FP, uuid="u", vector_dtype="int8")
