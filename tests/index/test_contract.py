"""The IndexBackend contract, run against every backend: the local faiss + SQLite index (Flat and an
approximate IVF structure) and Milvus through Milvus Lite.

Each test states one promise of mmretrieve/index/backend.py and checks it the same way on each backend.
"""
from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest
from index_helpers import unit_vectors

from mmretrieve.errors import EncoderMismatchError, IndexReadOnlyError
from mmretrieve.index import IndexBackend, MilvusIndex, Record, TuningConfig, UnifiedIndex
from mmretrieve.index.fingerprint import canonical_fingerprint
from mmretrieve.modality import Modality
from mmretrieve.verify import verify_index

DIM = 16
FP = {"format": "contract-test", "encoder": {"preset": "tiny", "weights": "seed:0"}, "window": 10.0}
MODS = [Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.TEXT]
_HAS_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None


class Local:
    """A UnifiedIndex in a tmp directory, with the given faiss factory."""

    def __init__(self, tmp_path, factory: str, tuning: TuningConfig | None = None):
        self.path, self.factory, self.tuning = str(tmp_path / "idx"), factory, tuning
        self.exact = factory == "Flat"  # an IVF structure may rank a near neighbour below a farther one

    def create(self) -> UnifiedIndex:
        return UnifiedIndex.create(DIM, FP, factory=self.factory, path=self.path, tuning=self.tuning)

    def reopen(self, readonly: bool = False) -> UnifiedIndex:
        return UnifiedIndex.open(self.path, readonly=readonly)


class Milvus:
    """A MilvusIndex in a Milvus Lite file."""

    def __init__(self, tmp_path):
        self.uri = str(tmp_path / "milvus.db")
        self.exact = True  # index type FLAT

    def create(self) -> MilvusIndex:
        return MilvusIndex.create(DIM, FP, uri=self.uri, collection="contract")

    def reopen(self, readonly: bool = False) -> MilvusIndex:
        return MilvusIndex.open(self.uri, "contract", readonly=readonly)


@pytest.fixture(params=[
    "local-flat", "local-ivf", "local-auto",
    pytest.param("milvus", marks=pytest.mark.skipif(not _HAS_MILVUS, reason="needs pymilvus and milvus-lite")),
])
def backend(request, tmp_path):
    maker = {"local-flat": lambda: Local(tmp_path, "Flat"), "local-ivf": lambda: Local(tmp_path, "IVF2,Flat"),
             # auto past its exact phase: a tuned, re-ranked approximate structure once _filled() commits
             "local-auto": lambda: Local(tmp_path, "auto", TuningConfig(flat_below=60, queries=20)),
             "milvus": lambda: Milvus(tmp_path)}[request.param]()
    opened: list = []

    def track(index):
        opened.append(index)
        return index

    maker.create_tracked = lambda: track(maker.create())
    maker.reopen_tracked = lambda readonly=False: track(maker.reopen(readonly))
    yield maker
    for index in opened:
        index.close()


def _file(path: str, n_windows: int, *, tag: str = "h1", metadata: dict | None = None, modality=Modality.VIDEO):
    return [Record(path=path, modality=modality, start=10.0 * w, end=10.0 * w + 10.0, content_hash=tag,
                   mtime=1.5, size=100, metadata=dict(metadata or {})) for w in range(n_windows)]


def _corpus(n: int = 120):
    """n single-window files over four modalities, with metadata to filter on, plus their vectors."""
    records = [Record(path=f"/media/f{i:03d}.bin", modality=MODS[i % 4], content_hash=f"h{i}", mtime=float(i), size=i,
                      metadata={"colour": ["red", "green", "blue"][i % 3], "n": i, "even": i % 2 == 0})
               for i in range(n)]
    return unit_vectors(n, DIM, seed=3), records


def _filled(backend):
    ix = backend.create_tracked()
    vecs, recs = _corpus()
    with ix.batch():
        ids = ix.add(vecs, recs)
    return ix, vecs, recs, ids


# ------------------------------------------------------------------------------------ static contract
_PROPERTIES = {"dim": int, "factory": str, "fingerprint": dict, "path": (str, type(None))}


def _protocol_members() -> list[str]:
    return sorted(n for n in vars(IndexBackend) if not n.startswith("_") or n == "__len__")


def test_backend_satisfies_the_protocol(backend):
    ix = backend.create_tracked()
    assert isinstance(ix, IndexBackend)
    for name in _protocol_members():
        declared = vars(IndexBackend)[name]
        if isinstance(declared, property):
            assert isinstance(getattr(ix, name), _PROPERTIES[name]), name
            continue
        want = inspect.signature(declared)
        got = inspect.signature(getattr(type(ix), name))
        for param in want.parameters.values():
            assert param.name in got.parameters, f"{type(ix).__name__}.{name} lacks parameter {param.name!r}"
            mine = got.parameters[param.name]
            assert mine.kind == param.kind and mine.default == param.default, f"{type(ix).__name__}.{name}({mine})"
        for extra in set(got.parameters) - set(want.parameters):  # a backend's own options must be optional
            assert got.parameters[extra].default is not inspect.Parameter.empty, f"{type(ix).__name__}.{name}({extra})"
        assert list(got.parameters)[:len(want.parameters)] == list(want.parameters), name


def test_properties_describe_the_index(backend):
    ix = backend.create_tracked()
    assert ix.dim == DIM and ix.fingerprint == canonical_fingerprint(FP) and ix.factory
    assert ix.path and len(ix) == 0 and ix.paths() == []
    assert ix.stats() == {"total": 0, "text": 0, "image": 0, "video": 0, "audio": 0}


def test_structure_names_what_search_runs_on(backend):
    ix, vecs, _, ids = _filled(backend)
    info = ix.structure()
    assert isinstance(info["structure"], str) and info["structure"]
    assert isinstance(info["exact"], bool) and isinstance(info["params"], dict)
    assert isinstance(info["note"], str) and isinstance(info["description"], str)
    # an approximate structure states the recall it was tuned to, or says why it has none
    assert info["exact"] or (info["recall"] is not None and info["recall"] >= info["target"]) or info["note"]
    if info["exact"]:
        assert [h[0].id for h in ix.search(vecs[:20], k=1)] == ids[:20]


# ------------------------------------------------------------------------------------ writes
def test_replace_path_swaps_all_windows_of_a_file(backend):
    ix = backend.create_tracked()
    vecs = unit_vectors(5, DIM, seed=1)
    first = ix.replace_path("/v.mp4", vecs[:3], _file("/v.mp4", 3, tag="old"))
    assert len(first) == 3 and len(set(first)) == 3
    assert [(h.start, h.end) for h in ix.entries("/v.mp4")] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    second = ix.replace_path("/v.mp4", vecs[3:5], _file("/v.mp4", 2, tag="new"))
    assert len(ix) == 2 and ix.file_state("/v.mp4") == ("new", 1.5, 100)
    assert sorted(h.id for h in ix.entries("/v.mp4")) == sorted(second)
    with pytest.raises(KeyError):
        ix.get(first[:1])


def test_a_failed_batch_writes_nothing_and_keeps_the_old_file(backend):
    ix = backend.create_tracked()
    vecs = unit_vectors(6, DIM, seed=2)
    old = ix.replace_path("/v.mp4", vecs[:3], _file("/v.mp4", 3, tag="old"))
    with pytest.raises(RuntimeError, match="interrupted"):
        with ix.batch():
            ix.replace_path("/v.mp4", vecs[3:4], _file("/v.mp4", 1, tag="new"))
            ix.add(vecs[4:5], [Record(path="/i.jpg", modality="image")])
            raise RuntimeError("interrupted")
    assert len(ix) == 3 and sorted(h.id for h in ix.entries("/v.mp4")) == sorted(old)
    assert ix.file_state("/v.mp4") == ("old", 1.5, 100) and ix.file_state("/i.jpg") is None
    # invalid records are refused before anything is written
    with pytest.raises(ValueError):
        ix.replace_path("/v.mp4", vecs[:1], [Record(path="/other.mp4", modality="video")])
    with pytest.raises(ValueError):
        ix.add(vecs[:2], [Record(path=None, modality="text")])
    assert len(ix) == 3 and ix.file_state("/v.mp4") == ("old", 1.5, 100)


def test_a_batch_commits_every_write_together(backend):
    ix = backend.create_tracked()
    vecs = unit_vectors(4, DIM, seed=4)
    with ix.batch():
        a = ix.replace_path("/a.wav", vecs[:2], _file("/a.wav", 2, modality=Modality.AUDIO))
        b = ix.add(vecs[2:3], [Record(path=None, modality="text", metadata={"text": "hello"})])
        ix.remove_path("/missing.jpg")
    assert len(ix) == 3 and ix.paths() == ["/a.wav"]
    assert [h.modality for h in ix.get(a + b)] == [Modality.AUDIO, Modality.AUDIO, Modality.TEXT]
    assert ix.get(b)[0].metadata == {"text": "hello"} and np.isnan(ix.get(b)[0].score)


def test_remove_counts_only_existing_rows(backend):
    ix, _, recs, ids = _filled(backend)
    assert ix.remove([ids[0], ids[1]]) == 2
    assert ix.remove([ids[0]]) == 0
    assert ix.remove_path(recs[2].path) == 1 and ix.remove_path(recs[2].path) == 0
    assert len(ix) == len(recs) - 3 and recs[2].path not in ix.paths()


# ------------------------------------------------------------------------------------ search
@pytest.mark.parametrize("filters", [
    {}, {"modality": "audio"}, {"modality": ["image", "text"]}, {"where": {"colour": "red"}},
    {"where": {"n": [3, 7, 11, 200]}}, {"modality": "video", "where": {"even": False, "colour": ["red", "blue"]}},
    {"where": {"colour": "purple"}},
])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_search_returns_k_whenever_k_match(backend, filters, k):
    ix, vecs, recs, ids = _filled(backend)
    mods = filters.get("modality")
    mods = None if mods is None else {Modality(m) for m in ([mods] if isinstance(mods, str) else mods)}
    where = filters.get("where", {})

    def matches(r: Record) -> bool:
        return (mods is None or Modality(r.modality) in mods) and all(
            r.metadata.get(key) in (want if isinstance(want, list) else [want]) for key, want in where.items())

    match = np.array([matches(r) for r in recs])
    queries = unit_vectors(3, DIM, seed=9)
    got = ix.search(queries, k, **filters)
    assert len(got) == len(queries)
    for q, hits in zip(queries, got):
        scores = vecs @ q
        order = [i for i in np.argsort(-scores, kind="stable") if match[i]][:k]
        assert len(hits) == min(k, int(match.sum())) and len({h.id for h in hits}) == len(hits)
        rows = [ids.index(h.id) for h in hits]
        assert all(match[i] for i in rows)
        np.testing.assert_allclose([h.score for h in hits], scores[rows], atol=1e-5)
        if backend.exact:
            assert {h.id for h in hits} == {ids[i] for i in order}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_hits_carry_the_records(backend):
    ix = backend.create_tracked()
    vecs = unit_vectors(3, DIM, seed=5)
    ix.replace_path("/v.mp4", vecs, _file("/v.mp4", 3, metadata={"album": "x"}))
    hit = ix.search(vecs[1], 1)[0][0]
    assert (hit.path, hit.modality, hit.start, hit.end, hit.metadata) == ("/v.mp4", Modality.VIDEO, 10.0, 20.0, {"album": "x"})
    assert hit.score == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------ encoder, counts, iteration
def test_fingerprint_of_another_encoder_is_refused(backend):
    ix = backend.create_tracked()
    ix.check_fingerprint(FP)
    ix.check_fingerprint(dict(reversed(list(FP.items()))))  # key order does not matter
    other = {**FP, "encoder": {"preset": "tiny", "weights": "seed:1"}}
    with pytest.raises(EncoderMismatchError, match=r"encoder\.weights: index='seed:0' given='seed:1'"):
        ix.check_fingerprint(other)
    with pytest.raises(EncoderMismatchError, match="window"):
        ix.check_fingerprint({k: v for k, v in FP.items() if k != "window"})


def test_counts_paths_and_file_states(backend):
    ix, _, recs, _ = _filled(backend)
    ix.replace_path("/long.wav", unit_vectors(3, DIM, seed=6), _file("/long.wav", 3, tag="w", modality=Modality.AUDIO))
    assert len(ix) == 123
    assert ix.stats() == {"total": 123, "image": 30, "video": 30, "audio": 33, "text": 30}
    assert ix.paths() == sorted([r.path for r in recs] + ["/long.wav"])
    assert ix.file_state(recs[7].path) == ("h7", 7.0, 7) and ix.file_state("/long.wav") == ("w", 1.5, 100)
    assert ix.file_state("/never.jpg") is None and ix.entries("/never.jpg") == []


def test_iteration_covers_every_entry_once(backend):
    ix, vecs, recs, ids = _filled(backend)
    ix.remove(ids[:10])
    seen_ids, seen_vecs = [], []
    for chunk_ids, chunk_vecs in ix.iter_vectors(chunk=32):
        assert chunk_vecs.shape == (len(chunk_ids), DIM) and chunk_vecs.dtype == np.float32
        seen_ids += [int(i) for i in chunk_ids]
        seen_vecs.append(chunk_vecs)
    assert sorted(seen_ids) == sorted(ids[10:])
    by_id = dict(zip(seen_ids, np.concatenate(seen_vecs)))
    for i, id_ in enumerate(ids[10:], start=10):
        np.testing.assert_array_equal(by_id[id_], vecs[i])
    hits = ix.get(seen_ids)
    assert [h.id for h in hits] == seen_ids
    assert {(h.path, h.metadata["n"]) for h in hits} == {(r.path, r.metadata["n"]) for r in recs[10:]}


def test_reopen_keeps_everything(backend):
    ix, vecs, _, ids = _filled(backend)
    ix.replace_path("/v.mp4", unit_vectors(2, DIM, seed=7), _file("/v.mp4", 2, metadata={"album": "x"}))
    stats, paths = ix.stats(), ix.paths()
    before = ix.search(vecs[:4], 5, where={"colour": "blue"})
    ix.save()
    ix.close()
    again = backend.reopen_tracked()
    assert again.stats() == stats and again.paths() == paths and again.fingerprint == canonical_fingerprint(FP)
    assert again.dim == DIM and again.file_state("/v.mp4") == ("h1", 1.5, 100)
    after = again.search(vecs[:4], 5, where={"colour": "blue"})
    assert [[h.id for h in row] for row in after] == [[h.id for h in row] for row in before]
    assert [h.metadata for h in again.entries("/v.mp4")] == [{"album": "x"}, {"album": "x"}]


def test_readonly_reads_and_refuses_every_write(backend):
    ix, vecs, recs, ids = _filled(backend)
    ix.close()
    ro = backend.reopen_tracked(readonly=True)
    assert len(ro) == 120 and ro.search(vecs[0], 1)[0][0].id == ids[0]
    writes = [lambda: ro.add(vecs[:1], recs[:1]), lambda: ro.replace_path(recs[0].path, vecs[:1], recs[:1]),
              lambda: ro.remove(ids[:1]), lambda: ro.remove_path(recs[0].path), lambda: ro.repair(ro.check())]
    for write in writes:
        with pytest.raises(IndexReadOnlyError, match="readonly"):
            write()
    with pytest.raises(IndexReadOnlyError):
        with ro.batch():
            pass
    assert len(ro) == 120


# ------------------------------------------------------------------------------------ integrity (verify)
def test_check_of_a_sound_index(backend):
    ix, _, recs, _ = _filled(backend)
    check = ix.check()
    assert check.entries == 120 and check.counts == ix.stats()
    assert dict(check.files) == {r.path: r.content_hash for r in recs}
    assert check.cache.ok
    assert not (check.orphan_items or check.orphan_vectors or check.bad_vectors or check.duplicates or check.mixed_files)


def test_check_and_repair_of_a_window_stored_twice(backend):
    ix = backend.create_tracked()
    vecs = unit_vectors(3, DIM, seed=8)
    ix.replace_path("/v.mp4", vecs[:2], _file("/v.mp4", 2))
    twice = ix.add(vecs[2:3], _file("/v.mp4", 1, tag="h2"))  # add() does not replace: a duplicate window
    check = ix.check()
    window0 = sorted(h.id for h in ix.entries("/v.mp4") if h.start == 0.0)
    assert len(window0) == 2 and twice[0] in window0
    assert len(check.duplicates) == 1 and check.duplicates[0] in window0
    assert check.mixed_files == ("/v.mp4",)
    actions = ix.repair(check)
    assert actions and "removed 1 orphan/bad/duplicate row(s)" in actions
    assert len(ix) == 2 and not ix.check().duplicates


def test_verify_runs_through_the_protocol(backend):
    ix, _, _, _ = _filled(backend)
    report = verify_index(ix, check_encoder=False)
    assert report.ok, str(report)
    assert report.entries == 120 and report.files == 120 and report.counts == ix.stats()
    assert len(report.missing_media) == 120  # the paths name no real files
    repaired = verify_index(ix, repair=True, check_encoder=False, prune_missing=True)
    assert repaired.ok and repaired.entries == 0 and len(ix) == 0
    assert "removed 120 row(s) of 120 missing file(s)" in repaired.repaired


# ------------------------------------------------------------------------------------ the contract is exactly what is used
class _OnlyTheContract:
    """Wraps an index so that only IndexBackend members can be reached; records which ones were."""

    def __init__(self, inner):
        self._inner, self.used = inner, set()

    def __getattr__(self, name):
        if name not in _protocol_members():
            raise AttributeError(f"{name!r} is not part of IndexBackend")
        self.used.add(name)
        return getattr(self._inner, name)

    def __len__(self) -> int:
        self.used.add("__len__")
        return len(self._inner)


def test_protocol_is_exactly_what_retriever_verify_and_export_use(tmp_path, media_factory):
    import sqlite3

    import mmretrieve as mmr

    files = media_factory(str(tmp_path / "media"), corrupt=True)
    proxy = None

    def make_index(dim, fp):
        nonlocal proxy
        proxy = _OnlyTheContract(UnifiedIndex.create(dim, fp, path=str(tmp_path / "idx")))
        return proxy

    r = mmr.Retriever.create("tiny-random", num_workers=0, make_index=make_index)
    r.add(str(tmp_path / "media"), progress=False, metadata={"album": "a"})
    r.add(["a red square"], modality="text", progress=False)
    assert r.add(str(tmp_path / "media"), progress=False).unchanged
    r.search("a red square", k=3, modality="image", where={"album": "a"})
    r.info()
    r.remove(files["image"][3])
    assert r.remove([r.search("a red square", k=1, modality="text")[0].id]) == 1
    assert len(r) > 0
    r.save()
    # damage verify must repair: a changed file (re-embedded) and a bad vector (its file re-embedded whole)
    with open(files["image"][0], "rb") as src, open(files["image"][1], "wb") as dst:
        dst.write(src.read())
    bad_id = proxy._inner.entries(files["audio"][0])[0].id
    conn = sqlite3.connect(tmp_path / "idx" / "meta.sqlite")
    conn.execute("UPDATE vectors SET vector = ? WHERE id = ?", (b"short", bad_id))
    conn.commit()
    conn.close()
    report = verify_index(proxy, repair=True, check_encoder=False, prune_missing=True)
    assert report.ok, str(report)
    assert any(a.startswith("re-embedded 2 changed file(s)") for a in report.repaired), report.repaired
    r.close()
    by_retriever_and_verify = set(proxy.used)
    # iteration is the contract's third user: copying any backend into Milvus
    assert by_retriever_and_verify | {"iter_vectors"} == set(_protocol_members())
    if _HAS_MILVUS:
        from mmretrieve.index import export_to_milvus

        with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as ix:
            proxy = _OnlyTheContract(ix)
            export_to_milvus(proxy, str(tmp_path / "m.db"), "copy").close()
        assert proxy.used == {"dim", "fingerprint", "iter_vectors", "get", "file_state"}
