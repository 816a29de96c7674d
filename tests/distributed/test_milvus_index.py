"""MilvusIndex against Milvus Lite (a local file): the UnifiedIndex behaviour the Retriever relies on."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="Milvus tests need the extra: pip install 'mmretrieve[milvus]' milvus-lite")
pytest.importorskip("milvus_lite", reason="Milvus tests need Milvus Lite for local files: pip install milvus-lite")

from mmretrieve.distributed import milvus_retriever
from mmretrieve.index.milvus import MilvusIndex, build_milvus_filter, export_to_milvus
from mmretrieve.errors import EncoderMismatchError
from mmretrieve.index import Record, UnifiedIndex

DIM = 8
HOSTILE = ['a"b', "it's", 'x" or 1==1 or "', "back\\slash", 'q\\" or true or \\"', "line\nbreak", "tab\tz", "ünï ☃"]


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(n):
    out = []
    for i in range(n):
        audio = i % 2 == 1
        out.append(Record(path=f"/data/f{i // 2}'\"{i % 3}.{'wav' if audio else 'jpg'}", modality="audio" if audio else "image",
                          start=float(i) if audio else None, end=float(i) + 10 if audio else None,
                          content_hash=f"sha256:{i // 2}", mtime=100.5 + i // 2, size=1000 + i // 2,
                          metadata={"album": HOSTILE[i % len(HOSTILE)], "n": i, "even": i % 2 == 0}))
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 40 entries in a UnifiedIndex and, exported, in Milvus Lite."""
    vecs, recs = _unit(40), _records(40)
    local = UnifiedIndex.create(DIM, {"format": "test", "encoder": {"preset": "x"}})
    local.add(vecs, recs)
    milvus = export_to_milvus(local, str(tmp_path_factory.mktemp("milvus") / "m.db"), "items")
    yield local, milvus, vecs
    milvus.close()
    local.close()


def _ids(hits):
    return [h.id for h in hits]


def test_export_keeps_everything(pair):
    local, milvus, vecs = pair
    assert len(milvus) == len(local) == 40
    assert milvus.stats() == local.stats()
    assert milvus.paths() == local.paths()
    for p in local.paths():
        assert milvus.file_state(p) == local.file_state(p)
    ids = [3, 1, 17]
    assert milvus.get(ids)[0].path == local.get(ids)[0].path
    for a, b in zip(milvus.get(ids), local.get(ids)):
        assert (a.id, a.path, a.modality, a.start, a.end, a.metadata) == (b.id, b.path, b.modality, b.start, b.end, b.metadata)
    np.testing.assert_allclose(milvus.vectors(ids), local.vectors(ids), atol=1e-7)
    with pytest.raises(KeyError):
        milvus.get([999_999])


@pytest.mark.parametrize("filters", [
    {}, {"modality": "audio"}, {"modality": ["image", "audio"]}, {"where": {"even": True}},
    {"where": {"n": [3, 5, 8]}}, {"modality": "image", "where": {"n": [3, 5, 8]}},
])
def test_search_matches_unified_index(pair, filters):
    local, milvus, vecs = pair
    got = milvus.search(vecs[:3], 5, **filters)
    want = local.search(vecs[:3], 5, **filters)
    for g, w in zip(got, want):
        assert _ids(g) == _ids(w)
        np.testing.assert_allclose([h.score for h in g], [h.score for h in w], atol=1e-5)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_filter_values_match_exactly(pair, value):
    local, milvus, vecs = pair
    got = milvus.search(vecs[:1], 40, where={"album": value})[0]
    want = local.search(vecs[:1], 40, where={"album": value})[0]
    assert sorted(_ids(got)) == sorted(_ids(want)) and got
    assert all(h.metadata["album"] == value for h in got)


def test_injection_cannot_widen_a_filter(pair):
    local, milvus, vecs = pair
    for value in ['" or id >= 0 or "', "' or 1==1 or '", '\\" or id >= 0 or \\"']:
        assert milvus.search(vecs[:1], 10, where={"album": value})[0] == []
    for key in ['album"] == "x" or metadata["n', "a]b", 'k"', "k\\", "", "x" * 300]:
        with pytest.raises(ValueError):
            milvus.search(vecs[:1], 10, where={key: 1})
    with pytest.raises(ValueError):
        milvus.search(vecs[:1], 10, where={"album": "bell\x07"})
    with pytest.raises(ValueError):
        milvus.search(vecs[:1], 10, modality="image\" or true")
    assert milvus.search(vecs[:1], 10, where={"n": []})[0] == []


def test_filter_templates_keep_values_out_of_the_expression():
    expr, params = build_milvus_filter("image", {"album": 'x" or true', "n": [1, None]}, templates=True)
    assert "or true" not in expr and "x" not in expr
    assert list(params.values()) == ["image", 'x" or true', 1]
    assert 'metadata["n"] is null' in expr


def test_writes_upsert_remove_and_reopen(tmp_path):
    uri = str(tmp_path / "w.db")
    idx = MilvusIndex.create(DIM, {"encoder": "e1"}, uri=uri, collection="w")
    vecs = _unit(6, seed=1)
    recs = [Record(path="/a.mp4", modality="video", start=float(10 * i), end=float(10 * i + 10),
                   content_hash="h1", mtime=1.0, size=5) for i in range(3)]
    with idx.batch():
        ids = idx.replace_path("/a.mp4", vecs[:3], recs)
        idx.add(vecs[3:4], [Record(path=None, modality="text", metadata={"text": "hello"})])
    assert len(idx) == 4 and idx.file_state("/a.mp4") == ("h1", 1.0, 5)
    new = [Record(path="/a.mp4", modality="video", start=0.0, end=5.0, content_hash="h2", mtime=2.0, size=6)]
    idx.replace_path("/a.mp4", vecs[4:5], new)
    assert len(idx) == 2 and idx.file_state("/a.mp4") == ("h2", 2.0, 6)
    with pytest.raises(KeyError):
        idx.get(ids)
    top = idx.search(vecs[4], 1)[0][0]
    assert (top.path, top.start, top.end) == ("/a.mp4", 0.0, 5.0)
    with pytest.raises(ValueError):
        idx.replace_path("/a.mp4", vecs[:1], [Record(path="/b.mp4", modality="video")])
    with pytest.raises(ValueError):
        idx.add(vecs[:2], [Record(path=None, modality="text")])
    with pytest.raises(RuntimeError):
        with idx.batch():
            idx.add(vecs[5:6], [Record(path="/c.jpg", modality="image")])
            raise RuntimeError("interrupted")
    assert len(idx) == 2  # nothing of the failed batch was written
    assert idx.remove_path("/a.mp4") == 1 and idx.remove([123, 456]) == 0
    idx.close()
    again = MilvusIndex.open(uri, "w")
    assert len(again) == 1 and again.stats()["text"] == 1
    again.check_fingerprint({"encoder": "e1"})
    with pytest.raises(EncoderMismatchError, match="encoder"):
        again.check_fingerprint({"encoder": "e2"})
    with pytest.raises(FileExistsError):
        MilvusIndex.create(DIM, {}, uri=uri, collection="w")
    with pytest.raises(FileNotFoundError):
        MilvusIndex.open(uri, "nope")
    with pytest.raises(ValueError):
        MilvusIndex.open(uri, "bad-name; drop")
    again.close()


def test_retriever_on_milvus_every_query_type(tmp_path, media_folder):
    import mmretrieve as mmr

    root, files = media_folder
    uri = str(tmp_path / "r.db")
    local = mmr.Retriever.create("tiny-random", num_workers=0)
    local.add(root, progress=False, metadata={"album": 'x"y'})
    with milvus_retriever(uri, "media", preset="tiny-random", num_workers=0) as remote:
        report = remote.add(root, progress=False, metadata={"album": 'x"y'})
        assert report.entries == len(local) and len(report.failed) == len(files["bad"])
        assert remote.add(root, progress=False).unchanged  # file_state drives the skip
        assert len(remote) == len(local)
        queries = ["a red square", files["image"][0], files["video"][0], files["audio"][0],
                   mmr.Composed(text="at night", image=files["image"][1])]
        for q in queries:
            for kw in ({}, {"modality": "video"}, {"where": {"album": 'x"y'}}):
                got, want = remote.search(q, k=4, **kw), local.search(q, k=4, **kw)
                assert [(h.path, h.start) for h in got] == [(h.path, h.start) for h in want]
                np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
        assert remote.info()["counts"] == local.info()["counts"]
    with milvus_retriever(uri, "media") as reopened:  # the encoder is rebuilt from the stored fingerprint
        got = reopened.search(files["image"][0], k=3, modality="image")
        assert [h.path for h in got] == [h.path for h in local.search(files["image"][0], k=3, modality="image")]
        with pytest.raises(EncoderMismatchError):
            milvus_retriever(uri, "media", preset="vit-b32-random")
    local.close()
