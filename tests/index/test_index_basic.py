"""Adding, searching, filtering, removing and upserting."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmretrieve.errors import EncoderMismatchError
from mmretrieve.index import Hit, Record, UnifiedIndex
from mmretrieve.index.store import MetadataStore
from mmretrieve.modality import Modality

from index_helpers import DIM, FP, make_records, unit_vectors


def test_exact_top1_on_random_unit_vectors():
    vecs = unit_vectors(500)
    ix = UnifiedIndex.create(DIM, FP)
    ids = ix.add(vecs, make_records(500))
    assert ids == list(range(1, 501))
    results = ix.search(vecs[:50], k=3)
    assert [r[0].id for r in results] == ids[:50]
    for r in results:
        assert r[0].score == pytest.approx(1.0, abs=1e-5)
        assert r[0].score >= r[1].score >= r[2].score
    hit = results[7][0]
    assert isinstance(hit, Hit) and hit.path == "/media/f7.bin" and hit.modality is Modality.TEXT
    assert (hit.start, hit.end) == (7.0, 8.0) and hit.metadata == {"colour": "green", "n": 7, "even": False}


def test_search_scores_equal_numpy_inner_products():
    vecs = unit_vectors(100)
    q = unit_vectors(4, seed=9)
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(vecs, make_records(100))
    got = ix.search(q, k=5)
    ref = q @ vecs.T
    for qi, hits in enumerate(got):
        expected = np.argsort(-ref[qi])[:5] + 1
        assert [h.id for h in hits] == expected.tolist()
        assert np.allclose([h.score for h in hits], np.sort(ref[qi])[::-1][:5], atol=1e-5)


def test_modality_filter_returns_k_when_they_exist():
    vecs = unit_vectors(400)
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(vecs, make_records(400))
    for mod in ("image", Modality.VIDEO, "AUDIO"):
        hits = ix.search(vecs[:3], k=25, modality=mod)
        assert all(len(h) == 25 for h in hits)
        assert all(x.modality.value == str(mod).lower() for h in hits for x in h)
    both = ix.search(vecs[0], k=200, modality=["image", "text"])[0]
    assert len(both) == 200 and {h.modality for h in both} == {Modality.IMAGE, Modality.TEXT}
    assert ix.search(vecs[0], k=1000, modality="audio")[0].__len__() == 100  # all there are
    with pytest.raises(ValueError, match="modality"):
        ix.search(vecs[0], k=3, modality="smell")


def test_metadata_filters_exact_and_typed():
    vecs = unit_vectors(300)
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(vecs, make_records(300))
    reds = ix.search(vecs[1], k=100, where={"colour": "red"})[0]
    assert len(reds) == 100 and all(h.metadata["colour"] == "red" for h in reds)
    combo = ix.search(vecs[1], k=1000, modality="image", where={"colour": ["red", "blue"], "even": True})[0]
    expected = {i + 1 for i in range(300) if i % 4 == 0 and i % 3 in (0, 2) and i % 2 == 0}
    assert {h.id for h in combo} == expected
    assert [h.id for h in ix.search(vecs[0], k=5, where={"n": 42})[0]] == [43]
    assert ix.search(vecs[0], k=5, where={"n": "42"})[0] == []      # string is not the number
    assert ix.search(vecs[0], k=5, where={"even": 1})[0] == []      # 1 is not true
    assert ix.search(vecs[0], k=5, where={"missing": "x"})[0] == []
    assert ix.search(vecs[0], k=5, where={"colour": []})[0] == []
    assert ix.count(modality="video") == 75


@pytest.mark.parametrize("key", ["colour') OR 1=1 --", 'colour" OR 1=1', "x'; DROP TABLE items; --",
                                 "$.colour", "colour\\"])
def test_sql_injection_in_keys_is_harmless(key):
    vecs = unit_vectors(30)
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(vecs, make_records(30))
    try:
        hits = ix.search(vecs[0], k=5, where={key: "red"})[0]
    except ValueError as exc:
        assert "where key" in str(exc)
    else:
        assert hits == []
    assert len(ix) == 30 and len(ix.search(vecs[0], k=30)[0]) == 30


@pytest.mark.parametrize("value", ["red' OR '1'='1", "'); DELETE FROM items; --", "red\" OR 1=1"])
def test_sql_injection_in_values_is_harmless(value):
    vecs = unit_vectors(30)
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(vecs, make_records(30))
    assert ix.search(vecs[0], k=5, where={"colour": value})[0] == []
    assert ix.search(vecs[0], k=5, where={"colour": [value, "red"]})[0].__len__() == 5
    assert len(ix) == 30


def test_filter_value_types_rejected():
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(unit_vectors(3), make_records(3))
    with pytest.raises(ValueError, match="not supported"):
        ix.search(unit_vectors(1), where={"colour": {"a": 1}})
    with pytest.raises(ValueError, match="where key"):
        ix.search(unit_vectors(1), where={"": 1})


def test_remove_and_remove_path():
    vecs = unit_vectors(40)
    ix = UnifiedIndex.create(DIM, FP)
    ids = ix.add(vecs, make_records(40))
    assert ix.search(vecs[5], k=1)[0][0].id == ids[5]
    assert ix.remove([ids[5], ids[6], 99999]) == 2
    assert ix.search(vecs[5], k=1)[0][0].id != ids[5]
    assert ix.remove_path("/media/f7.bin") == 1
    assert ix.remove_path("/media/f7.bin") == 0
    assert len(ix) == 37 and "/media/f7.bin" not in ix.paths()
    assert all(h.id not in {ids[5], ids[6], ids[7]} for h in ix.search(vecs[5:8], k=37)[0])
    with pytest.raises(KeyError):
        ix.get([ids[5]])


def test_replace_path_upserts_windows_in_one_go():
    ix = UnifiedIndex.create(DIM, FP)
    old = [Record("/v.mp4", "video", start=s, end=s + 10, content_hash="A", mtime=1.0, size=5) for s in (0, 10, 20)]
    ix.add(unit_vectors(3), old)
    ix.add(unit_vectors(2, seed=1), [Record("/x.jpg", "image"), Record(None, "text", metadata={"t": 1})])
    assert ix.file_state("/v.mp4") == ("A", 1.0, 5)
    new_vecs = unit_vectors(2, seed=2)
    new = [Record("/v.mp4", "video", start=s, end=s + 10, content_hash="B", mtime=2.0, size=6) for s in (0, 10)]
    new_ids = ix.replace_path("/v.mp4", new_vecs, new)
    assert ix.file_state("/v.mp4") == ("B", 2.0, 6)
    assert ix.count("video") == 2 and len(ix) == 4
    assert np.array_equal(ix.vectors(new_ids), new_vecs)
    assert ix.search(new_vecs[1], k=1)[0][0].id == new_ids[1]
    with pytest.raises(ValueError, match="differs"):
        ix.replace_path("/v.mp4", unit_vectors(1), [Record("/other.mp4", "video")])
    assert ix.count("video") == 2  # the failed upsert changed nothing
    assert ix.file_state("/nope") is None
    assert ix.paths() == ["/v.mp4", "/x.jpg"]


def test_get_and_vectors_keep_order():
    vecs = unit_vectors(10)
    ix = UnifiedIndex.create(DIM, FP)
    ids = ix.add(vecs, make_records(10))
    got = ix.get([ids[3], ids[1]])
    assert [g.id for g in got] == [ids[3], ids[1]] and all(math.isnan(g.score) for g in got)
    assert np.array_equal(ix.vectors([ids[9], ids[0]]), vecs[[9, 0]])
    assert ix.stats() == {"total": 10, "text": 2, "image": 3, "video": 3, "audio": 2}


def test_add_validation():
    ix = UnifiedIndex.create(DIM, FP)
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        ix.add(np.zeros((2, 8), np.float32), make_records(2))
    with pytest.raises(ValueError, match="2 rows but 3 records"):
        ix.add(unit_vectors(2), make_records(3))
    bad = unit_vectors(2)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ix.add(bad, make_records(2))
    with pytest.raises(ValueError, match="floating"):
        ix.add(np.ones((1, DIM), np.int64), make_records(1))
    with pytest.raises(ValueError, match="JSON"):
        ix.add(unit_vectors(1), [Record("/a", "image", metadata={"x": object()})])
    with pytest.raises(ValueError, match="before start"):
        ix.add(unit_vectors(1), [Record("/a", "video", start=5, end=1)])
    with pytest.raises(ValueError, match="modality"):
        ix.add(unit_vectors(1), [Record("/a", "smell")])
    with pytest.raises(ValueError, match="k="):
        ix.search(unit_vectors(1), k=0)
    assert len(ix) == 0 and ix.add(np.zeros((0, DIM), np.float32), []) == []
    assert ix.search(unit_vectors(2), k=3) == [[], []]


def test_batch_is_all_or_nothing():
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(unit_vectors(2), make_records(2))
    gen = ix.generation
    with pytest.raises(RuntimeError, match="boom"):
        with ix.batch():
            ix.add(unit_vectors(3, seed=1), make_records(3, "b"))
            ix.remove_path("/media/f0.bin")
            raise RuntimeError("boom")
    assert len(ix) == 2 and ix.generation == gen
    with ix.batch():
        ix.add(unit_vectors(3, seed=1), make_records(3, "b"))
        ix.remove_path("/media/f0.bin")
    assert len(ix) == 4 and ix.generation == gen + 1


def test_fingerprint_check():
    ix = UnifiedIndex.create(DIM, FP)
    ix.check_fingerprint(dict(FP))
    with pytest.raises(EncoderMismatchError, match=r"preprocess\.image_size"):
        ix.check_fingerprint({**FP, "preprocess": {"image_size": 224}})
    with pytest.raises(EncoderMismatchError, match="preset"):
        ix.check_fingerprint({**FP, "preset": "clip-vit-b32"})


def test_bad_create_arguments(tmp_path):
    with pytest.raises(ValueError, match="factory"):
        UnifiedIndex.create(DIM, FP, factory="NotAFactory")
    with pytest.raises(ValueError, match="dim"):
        UnifiedIndex.create(0, FP)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "user.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        UnifiedIndex.create(DIM, FP, path=str(tmp_path / "full"))
    assert (tmp_path / "full" / "user.txt").read_text() == "mine"


def test_filter_used_before_a_write_is_carried_forward_without_a_full_scan(monkeypatch):
    """After add / remove / replace_path, a filter seen before is updated from the rows written since
    (filtered_ids(since_gen=...)) and the removed ids; results equal a fresh evaluation."""
    vecs = unit_vectors(400)
    ix = UnifiedIndex.create(DIM, FP)
    ids = ix.add(vecs[:300], make_records(300))
    q = unit_vectors(3, seed=5)
    ix.search(q, k=5, modality="image")
    ix.search(q, k=5, where={"colour": "red"})
    calls: list[int | None] = []
    original = MetadataStore.filtered_ids

    def spy(self, sql_filter, *, since_gen=None):
        calls.append(since_gen)
        return original(self, sql_filter, since_gen=since_gen)

    monkeypatch.setattr(MetadataStore, "filtered_ids", spy)
    ix.add(vecs[300:], make_records(100, "n"))
    ix.remove(ids[:40])
    ix.replace_path("/media/f41.bin", vecs[:1], [Record("/media/f41.bin", "image", metadata={"colour": "red"})])
    got_mod = ix.search(q, k=400, modality="image")
    got_where = ix.search(q, k=400, where={"colour": "red"})
    assert calls and None not in calls  # only rows written since were read
    fresh = UnifiedIndex.create(DIM, FP)
    fresh_ids = fresh.add(ix.vectors(sorted(h.id for h in ix.search(q[0], k=1000)[0])),
                          [Record(h.path, h.modality, start=h.start, end=h.end, metadata=h.metadata)
                           for h in sorted(ix.search(q[0], k=1000)[0], key=lambda h: h.id)])
    assert len(fresh_ids) == len(ix) == 300 + 100 - 40  # replace_path swapped one row for one
    for got, kw in ((got_mod, {"modality": "image"}), (got_where, {"where": {"colour": "red"}})):
        want = fresh.search(q, k=400, **kw)
        assert [[(h.path, round(h.score, 5)) for h in hits] for hits in got] == \
            [[(h.path, round(h.score, 5)) for h in hits] for hits in want]
