"""The re-rank file (rerank.vec): candidates re-scored from a memory-mapped copy of the vectors, no
SQL per query; a stale file is completed from the database; damage is found by check() and set aside
by repair(); a crash while writing it leaves the previous file."""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from index_helpers import FP, make_records

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index import UnifiedIndex
from mmretrieve.index.rerank import RERANK_NAME, open_rerank
from mmretrieve.index.store import MetadataStore
from mmretrieve.index.tuning import TuningConfig, offset_queries
from mmretrieve.testing.vectors import clustered_unit_vectors

D = 32
CFG = TuningConfig(flat_below=1000, queries=50)


def _approximate(path: str, n: int = 3000, **kw) -> tuple[UnifiedIndex, np.ndarray, list[int]]:
    base = clustered_unit_vectors(n, D, clusters=30, spread=0.8, seed=4)
    ix = UnifiedIndex.create(D, FP, path=path, tuning=CFG, **kw)
    ids = ix.add(base, make_records(n))
    assert not ix.plan.exact and ix.plan.rerank > 0
    return ix, base, ids


def _ids(ix: UnifiedIndex, q: np.ndarray) -> list[list[int]]:
    return [[h.id for h in hits] for hits in ix.search(q, k=10)]


def test_search_rescores_from_the_mapped_file_without_sql(tmp_path, monkeypatch):
    path = str(tmp_path / "idx")
    ix, base, ids = _approximate(path)
    q = offset_queries(base[:30], seed=2)
    expected = _ids(ix, q)
    ix.close()
    table = open_rerank(os.path.join(path, RERANK_NAME), dim=D)
    assert table.dtype == "float16" and table.rows == max(ids) + 1
    np.testing.assert_array_equal(np.asarray(table.data[ids]), base.astype(np.float16))

    def no_sql(*a, **kw):
        raise AssertionError("vectors read through SQL during a search")

    monkeypatch.setattr(MetadataStore, "vectors_matrix", no_sql)
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert _ids(ro, q) == expected
        hits = ro.search(q[0], k=10)[0]
        exact16 = base.astype(np.float16).astype(np.float32) @ q[0]
        for h in hits:  # scores are the float16 re-rank scores
            assert h.score == pytest.approx(float(exact16[ids.index(h.id)]), abs=1e-5)


def test_rows_added_after_the_file_come_from_the_database_until_saved(tmp_path):
    path = str(tmp_path / "idx")
    ix, base, ids = _approximate(path)
    ix.save()
    more = clustered_unit_vectors(200, D, clusters=30, spread=0.8, seed=9)
    new_ids = ix.add(more, make_records(200, "m"))  # file now stale (ids beyond its rows)
    q = offset_queries(more[:20], seed=3)
    before = _ids(ix, q)
    with UnifiedIndex.open(path, readonly=True) as ro:  # a reader maps the stale file
        assert open_rerank(os.path.join(path, RERANK_NAME), dim=D).rows == max(ids) + 1
        assert _ids(ro, q) == before
        assert ro.search(more[5], k=1)[0][0].id == new_ids[5]
    ix.close()  # close extends the file
    assert open_rerank(os.path.join(path, RERANK_NAME), dim=D).rows == max(new_ids) + 1
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert _ids(ro, q) == before


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_found_by_check_and_set_aside_by_repair(tmp_path, damage):
    path = str(tmp_path / "idx")
    ix, base, ids = _approximate(path)
    ix.close()
    target = os.path.join(path, RERANK_NAME)
    with open(target, "r+b") as f:
        if damage == "flip":
            f.seek(-D * 2, os.SEEK_END)  # the last row's first value
            byte = f.read(1)
            f.seek(-D * 2, os.SEEK_END)
            f.write(bytes([byte[0] ^ 0x40]))
        else:
            f.truncate(os.path.getsize(target) - 10)
    if damage == "truncate":
        with pytest.raises(IndexCorruptError, match="rerank.vec.*truncated"):
            UnifiedIndex.open(path, readonly=True)
    with UnifiedIndex.open(path, load_cache=False) as ix:
        check = ix.check()
        assert not check.cache.ok and check.cache.status == "corrupt" and RERANK_NAME in check.cache.detail
        actions = ix.repair(check)
        assert any(a.startswith("moved the bad re-rank file aside") for a in actions)
        assert not os.path.exists(target)
    with UnifiedIndex.open(path) as ix:  # writer: the closing save rewrites it
        assert ix.check().cache.ok
    np.testing.assert_array_equal(np.asarray(open_rerank(target, dim=D).data[ids]), base.astype(np.float16))


def test_row_differing_from_the_stored_vector_is_reported(tmp_path):
    path = str(tmp_path / "idx")
    ix, base, ids = _approximate(path)
    ix.close()
    table = open_rerank(os.path.join(path, RERANK_NAME), dim=D)
    offset = os.path.getsize(os.path.join(path, RERANK_NAME)) - table.data.nbytes
    del table
    # rewrite row ids[3] and the header checksum so only the content comparison can catch it
    with open(os.path.join(path, RERANK_NAME), "r+b") as f:
        f.seek(offset + ids[3] * D * 2)
        f.write(np.zeros(D, np.float16).tobytes())
        f.seek(offset)
        digest = hashlib.sha256(f.read()).hexdigest()
        f.seek(len(b"MMRRERANK\x01\n"))
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        header["sha256"] = digest
        f.seek(len(b"MMRRERANK\x01\n") + 8)
        f.write(json.dumps(header, sort_keys=True).encode().ljust(hlen, b" "))
    with UnifiedIndex.open(path, readonly=True, load_cache=False) as ro:
        check = ro.check()
        assert check.cache.mismatched_ids == (ids[3],) and not check.cache.ok


def test_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "idx")
    ix, base, ids = _approximate(path)
    ix.save()
    before = open(os.path.join(path, RERANK_NAME), "rb").read()
    ix.add(clustered_unit_vectors(10, D, seed=5), make_records(10, "c"))
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        ix.save()
    monkeypatch.undo()
    assert open(os.path.join(path, RERANK_NAME), "rb").read() == before
    assert not [p for p in os.listdir(path) if ".tmp-" in p]
    ix.close()


def test_float32_rerank_and_snapshot_copy(tmp_path):
    cfg32 = TuningConfig(flat_below=1000, queries=50, rerank_dtype="float32")
    base = clustered_unit_vectors(3000, D, clusters=30, spread=0.8, seed=4)
    ix = UnifiedIndex.create(D, FP, tuning=cfg32)  # in memory: the table lives in memory
    ids = ix.add(base, make_records(3000))
    assert ix.plan.rerank_dtype == "float32" and "float32" in ix.plan.describe()
    q = offset_queries(base[:20], seed=6)
    expected = _ids(ix, q)
    ix.save(str(tmp_path / "copy"))
    table = open_rerank(str(tmp_path / "copy" / RERANK_NAME), dim=D)
    np.testing.assert_array_equal(np.asarray(table.data[ids]), base)
    with UnifiedIndex.open(str(tmp_path / "copy"), readonly=True) as ro:
        assert _ids(ro, q) == expected
