"""Save/open round trips, cache catch-up, crash during save, damaged files, trainable factories."""
from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index import IndexReadOnlyError, IndexTrainingError, Record, UnifiedIndex
from mmretrieve.index import layout


def _results(ix, q, **kw):
    return [[(h.id, round(h.score, 5), h.path, h.modality, h.start, h.end, h.metadata) for h in hits]
            for hits in ix.search(q, k=7, **kw)]


def test_round_trip_identical_search(filled, tmp_path):
    ix, vecs, ids = filled
    q = unit_vectors(5, seed=3)
    assert ix.search(q[:1], k=1)[0][0].id in ids
    ix.remove(ids[:3])
    expected = _results(ix, q)
    expected_f = _results(ix, q, modality="video", where={"colour": ["red", "blue"]})
    ix.close()
    files = set(os.listdir(tmp_path / "idx"))
    assert {"manifest.json", "meta.sqlite", "vectors.faiss", "writer.lock"} <= files
    with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as again:
        assert again.dim == DIM and again.fingerprint == FP and again.factory == "auto"
        assert again.plan.structure == "Flat" and again.plan.exact  # auto: exact while small
        assert len(again) == 197 and again.stats()["total"] == 197
        assert _results(again, q) == expected
        assert _results(again, q, modality="video", where={"colour": ["red", "blue"]}) == expected_f
        assert np.array_equal(again.vectors(ids[3:6]), vecs[3:6])
        assert again.file_state("/media/f4.bin") == ("h4", 1004.0, 14)


def test_in_memory_save_to_path_and_load(tmp_path):
    vecs = unit_vectors(50)
    mem = UnifiedIndex.create(DIM, FP)
    mem.add(vecs, make_records(50))
    q = unit_vectors(3, seed=4)
    expected = _results(mem, q)
    mem.save(str(tmp_path / "snap"))
    with pytest.raises(ValueError, match="in memory"):
        mem.save()
    with UnifiedIndex.open(str(tmp_path / "snap")) as ix:
        assert _results(ix, q) == expected
        ix.add(unit_vectors(1, seed=8), [Record("/new", "image")])
    assert len(mem) == 50  # the snapshot is independent of the in-memory index


def test_stale_cache_is_caught_up_from_database(tmp_path):
    path = str(tmp_path / "idx")
    vecs = unit_vectors(60)
    ix = UnifiedIndex.create(DIM, FP, path=path)
    ids = ix.add(vecs[:40], make_records(40))
    ix.save()  # cache reflects 40 rows
    ix.add(vecs[40:], make_records(20, "late"))
    ix.remove(ids[:5])
    # simulate kill -9: no close(), the cache on disk stays stale; drop the lock by hand
    ix._lock.release()
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert len(ro) == 55
        assert ro.search(vecs[45], k=1)[0][0].path == "/media/late5.bin"
        assert all(h.id not in ids[:5] for h in ro.search(vecs[2], k=55)[0])
        assert len(ro.search(vecs[2], k=100)[0]) == 55


def test_fingerprint_mismatch_refused_after_open(filled, tmp_path):
    from mmretrieve.errors import EncoderMismatchError
    ix, _, _ = filled
    ix.close()
    with UnifiedIndex.open(str(tmp_path / "idx")) as again:
        again.check_fingerprint(FP)
        with pytest.raises(EncoderMismatchError, match="weights"):
            again.check_fingerprint({**FP, "weights": "sha256:abc"})


def test_manifest_edited_fingerprint_detected(filled, tmp_path):
    ix, _, _ = filled
    ix.close()
    mpath = tmp_path / "idx" / "manifest.json"
    body = json.loads(mpath.read_text())
    body["fingerprint"]["preset"] = "something-else"
    mpath.write_text(json.dumps(body))
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        UnifiedIndex.open(str(tmp_path / "idx"))


def test_crash_mid_snapshot_leaves_old_index(tmp_path, monkeypatch):
    target = str(tmp_path / "snap")
    vecs = unit_vectors(30)
    src = UnifiedIndex.create(DIM, FP)
    src.add(vecs[:10], make_records(10))
    src.save(target)  # old contents: 10 rows
    src.add(vecs[10:], make_records(20, "more"))

    real_rename = os.rename
    calls = []

    def crashing_rename(a, b):
        calls.append((a, b))
        if ".tmp-" in os.fspath(a):  # the commit rename: crash just before it
            raise OSError("simulated crash")
        return real_rename(a, b)

    monkeypatch.setattr(os, "rename", crashing_rename)
    with pytest.raises(OSError, match="simulated"):
        src.save(target)
    monkeypatch.undo()
    with UnifiedIndex.open(target) as ix:
        assert len(ix) == 10
        assert ix.search(vecs[3], k=1)[0][0].path == "/media/f3.bin"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_hard_crash_between_renames_recovered_on_open(tmp_path):
    target = str(tmp_path / "snap")
    src = UnifiedIndex.create(DIM, FP)
    src.add(unit_vectors(10), make_records(10))
    src.save(target)
    # state after a kill between "target -> .old" and ".tmp -> target": no target, an .old, a half .tmp
    old = layout.sibling_name(target, layout.OLD_TAG).replace(f"{os.getpid()}-", "999999999-")
    os.rename(target, old)
    half = layout.sibling_name(target, layout.TMP_TAG).replace(f"{os.getpid()}-", "999999998-")
    os.mkdir(half)
    (tmp_path / os.path.basename(half) / "meta.sqlite").write_bytes(b"partial")
    with UnifiedIndex.open(target, readonly=True) as ro:  # readonly: loads the old copy, renames nothing
        assert len(ro) == 10
    assert not os.path.exists(target)
    with UnifiedIndex.open(target) as ix:
        assert len(ix) == 10
    assert sorted(os.listdir(tmp_path)) == ["snap"]


def test_crash_while_writing_cache_keeps_previous_cache(tmp_path, monkeypatch):
    path = str(tmp_path / "idx")
    vecs = unit_vectors(20)
    ix = UnifiedIndex.create(DIM, FP, path=path)
    ix.add(vecs[:10], make_records(10))
    ix.save()
    cache = tmp_path / "idx" / "vectors.faiss"
    before = cache.read_bytes()
    ix.add(vecs[10:], make_records(10, "b"))
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        ix.save()
    monkeypatch.undo()
    assert cache.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path / "idx") if ".tmp-" in p]
    ix._lock.release()  # simulate the process dying here
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert len(ro) == 20 and ro.search(vecs[15], k=1)[0][0].path == "/media/b5.bin"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_cache_is_corrupt(filled, tmp_path, fraction):
    ix, _, _ = filled
    ix.close()
    cache = tmp_path / "idx" / "vectors.faiss"
    data = cache.read_bytes()
    cache.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(IndexCorruptError, match="vectors.faiss"):
        UnifiedIndex.open(str(tmp_path / "idx"), readonly=True)
    with pytest.raises(IndexCorruptError):
        UnifiedIndex.open(str(tmp_path / "idx"))
    cache.unlink()  # the cache is derived: without it the index rebuilds from the database
    with UnifiedIndex.open(str(tmp_path / "idx")) as again:
        assert len(again.search(unit_vectors(1), k=300)[0]) == 200


def test_tampered_cache_is_corrupt(filled, tmp_path):
    ix, _, _ = filled
    ix.close()
    cache = tmp_path / "idx" / "vectors.faiss"
    data = bytearray(cache.read_bytes())
    data[-100] ^= 0xFF
    cache.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="checksum"):
        UnifiedIndex.open(str(tmp_path / "idx"), readonly=True)
    cache.write_bytes(b"\x80\x04\x95pickle payload")  # a pickle is never unpickled
    with pytest.raises(IndexCorruptError, match="magic"):
        UnifiedIndex.open(str(tmp_path / "idx"), readonly=True)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.8])
def test_truncated_database_is_corrupt(filled, tmp_path, fraction):
    ix, _, _ = filled
    ix.close()
    db = tmp_path / "idx" / "meta.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(IndexCorruptError, match="meta.sqlite"):
        with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as ro:
            ro.search(unit_vectors(1), k=300)


def test_garbage_database_and_manifest(filled, tmp_path):
    ix, _, _ = filled
    ix.close()
    d = tmp_path / "idx"
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        UnifiedIndex.open(str(d))
    with pytest.raises(IndexCorruptError, match="not an mmretrieve index"):
        UnifiedIndex.open(str(tmp_path))
    with pytest.raises(IndexCorruptError):
        UnifiedIndex.open(str(tmp_path / "nothing-here"))


def test_database_with_wrong_vector_blob(filled, tmp_path):
    ix, _, ids = filled
    ix.close()
    os.unlink(tmp_path / "idx" / "vectors.faiss")
    conn = sqlite3.connect(tmp_path / "idx" / "meta.sqlite")
    conn.execute("UPDATE vectors SET vector = ? WHERE id = ?", (b"short", ids[0]))
    conn.commit()
    conn.close()
    with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as ro:
        with pytest.raises(IndexCorruptError, match="wrong size"):
            ro.search(unit_vectors(1), k=3)


def test_readonly_refuses_writes(filled, tmp_path):
    ix, vecs, _ = filled
    ix.close()
    with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as ro:
        with pytest.raises(IndexReadOnlyError, match="readonly"):
            ro.add(vecs[:1], make_records(1))
        with pytest.raises(IndexReadOnlyError):
            ro.remove_path("/media/f1.bin")
        with pytest.raises(IndexReadOnlyError):
            ro.save()


def test_save_refuses_to_overwrite_user_data(tmp_path):
    ix = UnifiedIndex.create(DIM, FP)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError):
        ix.save(str(tmp_path / "docs"))
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_ivf_factory_trains_and_filters_exactly(tmp_path):
    vecs = unit_vectors(600, seed=5)
    path = str(tmp_path / "ivf")
    ix = UnifiedIndex.create(DIM, FP, factory="IVF8,Flat", path=path)
    ix.add(vecs[:4], make_records(4))
    with pytest.raises(IndexTrainingError, match="IVF8,Flat"):
        ix.search(vecs[:1], k=1)
    ix.add(vecs[4:], make_records(596, "g"))
    top = ix.search(vecs[:20], k=1)
    assert sum(t[0].id == i + 1 for i, t in enumerate(top)) >= 15  # approximate, nprobe=1
    before = [[(h.id, h.score) for h in q] for q in ix.search(vecs[:20], k=5)]
    # a selective filter still returns k hits even though nprobe=1 would miss most of them
    hits = ix.search(vecs[0], k=10, where={"n": list(range(0, 600, 50))})[0]
    assert len(hits) == 10 and all(h.metadata["n"] % 50 == 0 for h in hits)
    ix.close()
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert ro.factory == "IVF8,Flat"
        # the reopened index answers every query exactly as before (same trained IVF, same order)
        assert [[(h.id, h.score) for h in q] for q in ro.search(vecs[:20], k=5)] == before
        assert len(ro) == 600


def test_hnsw_factory_survives_removal():
    vecs = unit_vectors(300, seed=6)
    ix = UnifiedIndex.create(DIM, FP, factory="HNSW16")
    ids = ix.add(vecs, make_records(300))
    assert ix.search(vecs[7], k=1)[0][0].id == ids[7]
    ix.remove([ids[7]])  # HNSW cannot remove in place: the index rebuilds
    assert all(h.id != ids[7] for h in ix.search(vecs[7], k=10)[0])
    assert len(ix.search(vecs[7], k=5, modality="audio")[0]) == 5



def test_damaged_generation_row_names_the_database(filled, tmp_path):
    ix, _, _ = filled
    ix.close()
    conn = sqlite3.connect(str(tmp_path / "idx" / "meta.sqlite"))
    conn.execute("UPDATE state SET generation = 'seven'")
    conn.commit()
    conn.close()
    with pytest.raises(IndexCorruptError, match="meta.sqlite: table state"):
        UnifiedIndex.open(str(tmp_path / "idx"), readonly=True)
