"""Choosing and tuning the faiss structure: auto stays exact while small, then picks an approximate
structure tuned to its recall target on text-like offset queries; a structure that cannot reach its
target is replaced by exact search (and says so); plans persist; growth re-chooses; compact storage."""
from __future__ import annotations

import logging
import os
import sqlite3

import faiss
import numpy as np
import pytest
from index_helpers import FP, make_records

from mmretrieve.index import UnifiedIndex
from mmretrieve.index.tuning import Plan, TuningConfig, candidate_structures, offset_queries, parse_memory, recall_at
from mmretrieve.index.vectors import read_cache
from mmretrieve.testing.vectors import clustered_unit_vectors, exact_top_k

D = 32
SMALL = TuningConfig(flat_below=1500, queries=100)


def _data(n: int, seed: int = 1) -> np.ndarray:
    return clustered_unit_vectors(n, D, clusters=40, spread=0.8, seed=seed)


def _served_recall(ix: UnifiedIndex, base: np.ndarray, ids: list[int], seed: int) -> float:
    """recall@10 of ix.search on fresh offset queries (not the tuning ones) against exact search."""
    rng = np.random.default_rng(seed)
    q = offset_queries(base[rng.choice(len(base), 100, replace=False)], seed=seed)
    truth = np.asarray(ids)[exact_top_k(q, base, 10)]
    found = np.array([[h.id for h in hits] for hits in ix.search(q, k=10)])
    return recall_at(found, truth)


def test_auto_is_exact_while_small_then_tuned_to_its_target(tmp_path):
    base = _data(6000)
    ix = UnifiedIndex.create(D, FP, path=str(tmp_path / "idx"), tuning=SMALL)
    assert ix.factory == "auto"
    ids = ix.add(base[:1000], make_records(1000, "a"))
    assert ix.plan.structure == "Flat" and ix.plan.exact and ix.plan.next_at == 1500
    ids += ix.add(base[1000:], make_records(5000, "b"))  # past flat_below: re-chosen on this commit
    plan = ix.plan
    assert not plan.exact and not plan.fallback and plan.structure.startswith(("IVF", "HNSW")), plan
    assert plan.recall >= 0.95 and plan.target == 0.95 and plan.count == 6000 and plan.next_at == 24000
    assert plan.rerank in (10, 20, 40, 80) and plan.rerank_dtype == "float16" and (plan.nprobe or plan.ef_search)
    assert _served_recall(ix, base, ids, seed=7) >= 0.9  # held-out queries: close to the tuned recall
    info = ix.structure()
    assert info["structure"] == plan.structure and info["recall"] == plan.recall and not info["exact"]
    ix.close()


def test_unreachable_target_falls_back_to_exact_and_says_so(tmp_path, caplog):
    base = _data(3000)
    cfg = TuningConfig(target_recall=0.99, rerank=0, queries=100)  # 2-byte codes, no re-rank: cannot reach
    ix = UnifiedIndex.create(D, FP, factory="IVF16,PQ2", path=str(tmp_path / "idx"), tuning=cfg)
    with caplog.at_level(logging.WARNING, logger="mmretrieve.index.unified"):
        ids = ix.add(base, make_records(3000))
    plan = ix.plan
    assert plan.fallback and plan.exact and plan.structure == "Flat" and plan.recall == 1.0
    assert "IVF16,PQ2 reached recall@10" in plan.note and "fallback to exact search" in plan.note
    assert any("fallback to exact search" in r.getMessage() for r in caplog.records)
    assert _served_recall(ix, base, ids, seed=3) == 1.0
    assert ix.structure()["fallback"] is True and "fallback" in ix.structure()["description"]
    assert ix.factory == "IVF16,PQ2"  # the user's choice stays recorded; exact search serves it


def test_user_factory_is_tuned_and_reaches_its_target(tmp_path):
    base = _data(4000)
    ix = UnifiedIndex.create(D, FP, factory="IVF64,PQ8", path=str(tmp_path / "idx"),
                             tuning=TuningConfig(queries=100))
    ids = ix.add(base, make_records(4000))
    plan = ix.plan
    assert plan.structure == "IVF64,PQ8" and plan.nprobe is not None and plan.recall >= 0.95
    assert _served_recall(ix, base, ids, seed=11) >= 0.9


def test_untuned_factory_keeps_faiss_defaults(tmp_path):
    ix = UnifiedIndex.create(D, FP, factory="IVF16,Flat", tuning=TuningConfig(tune=False))
    ix.add(_data(2000), make_records(2000))
    plan = ix.plan
    assert plan.structure == "IVF16,Flat" and not plan.tuned and plan.next_at is None and "not tuned" in plan.note


def test_plan_and_parameters_persist_and_reload(tmp_path):
    path = str(tmp_path / "idx")
    base = _data(4000)
    ix = UnifiedIndex.create(D, FP, path=path, tuning=SMALL)
    ix.add(base, make_records(4000))
    plan = ix.plan
    q = offset_queries(base[:20], seed=5)
    before = [[h.id for h in hits] for hits in ix.search(q, k=10)]
    ix.close()
    _, header = read_cache(os.path.join(path, "vectors.faiss"), dim=D, factory=None)
    assert header["factory"] == plan.structure
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert ro.plan == plan and ro.tuning == SMALL
        assert [[h.id for h in hits] for hits in ro.search(q, k=10)] == before
    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    stored = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('plan', 'tuning')").fetchall())
    conn.close()
    assert Plan.from_json(stored["plan"]) == plan and TuningConfig.from_json(stored["tuning"]) == SMALL


def test_growth_re_chooses_on_the_next_commit_and_optimize(tmp_path):
    path = str(tmp_path / "idx")
    base = _data(8000)
    ix = UnifiedIndex.create(D, FP, path=path, tuning=TuningConfig(flat_below=1000, growth=3.0, queries=100))
    ix.add(base[:1200], make_records(1200, "a"))
    first = ix.plan
    assert not first.exact and first.count == 1200 and first.next_at == 3600
    ix.add(base[1200:3000], make_records(1800, "b"))
    assert ix.plan == first  # below the next threshold: unchanged
    ix.add(base[3000:], make_records(5000, "c"))
    second = ix.plan
    assert second.count == 8000 and second.next_at == 24000 and second.recall >= 0.95
    assert optimize_again(ix).count == 8000
    ix.close()


def optimize_again(ix: UnifiedIndex) -> Plan:
    stages = []
    plan = ix.optimize(progress=lambda stage, done, total: stages.append(stage))
    assert any(s.startswith("add ") for s in stages) and any(s.startswith("tune ") for s in stages)
    return plan


def test_interrupted_optimize_keeps_the_old_structure_serving(tmp_path):
    path = str(tmp_path / "idx")
    base = _data(3000)
    ix = UnifiedIndex.create(D, FP, path=path, tuning=TuningConfig(flat_below=10_000, queries=100))
    ids = ix.add(base, make_records(3000))
    ix.save()
    cache = os.path.join(path, "vectors.faiss")
    before = open(cache, "rb").read()

    def stop(stage: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ix.optimize(progress=stop)
    assert ix.plan.structure == "Flat" and open(cache, "rb").read() == before
    assert ix.search(base[5], k=1)[0][0].id == ids[5]
    ix.close()


def test_a_reader_follows_the_writers_new_plan(tmp_path):
    path = str(tmp_path / "idx")
    base = _data(3000)
    ix = UnifiedIndex.create(D, FP, path=path, tuning=TuningConfig(flat_below=2000, queries=100))
    ids = ix.add(base[:1500], make_records(1500, "a"))
    ix.save()
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert ro.plan.exact
        assert ro.search(base[3], k=1)[0][0].id == ids[3]
        ix.add(base[1500:], make_records(1500, "b"))  # re-chosen: approximate
        assert not ix.plan.exact
        assert ro.plan == ix.plan
        assert ro.search(base[3], k=1)[0][0].id == ids[3]
    ix.close()


def _vector_bytes_per_entry(path: str, n: int) -> float:
    """Every file of the index directory except the SQLite pages of the metadata tables, per entry."""
    files = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    metadata = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name NOT IN ('vectors')").fetchone()[0]
    conn.close()
    return (files - metadata) / n


@pytest.mark.parametrize("vector_dtype, limit", [("float16", 1.15), ("float32", 1.65)])
def test_on_disk_bytes_per_vector_stay_near_the_raw_vector(tmp_path, vector_dtype, limit):
    """Vector storage (SQLite vector rows + the faiss file + the float16 re-rank file) against the raw
    float32 vectors: at most 1.15x with float16 storage; float32 storage adds the re-rank copy (0.5x)
    to the full vectors. The metadata tables are counted separately."""
    d, n = 256, 4000
    path = str(tmp_path / "idx")
    base = clustered_unit_vectors(n, d, clusters=40, seed=2)
    ix = UnifiedIndex.create(d, FP, path=path, tuning=TuningConfig(flat_below=1000, queries=50),
                             vector_dtype=vector_dtype)
    ix.add(base, make_records(n))
    assert not ix.plan.exact and ix.plan.rerank > 0 and ix.vector_dtype == vector_dtype
    ix.close()
    assert sorted(os.listdir(path)) == ["manifest.json", "meta.sqlite", "rerank.vec", "vectors.faiss", "writer.lock"]
    per_vector = _vector_bytes_per_entry(path, n)
    assert 4 * d * (limit - 0.5) < per_vector <= limit * 4 * d, per_vector


def test_float16_storage_rounds_vectors_and_refuses_out_of_range(tmp_path):
    base = clustered_unit_vectors(50, D, clusters=5, seed=3)
    ix = UnifiedIndex.create(D, FP, path=str(tmp_path / "idx"), vector_dtype="float16")
    ids = ix.add(base, make_records(50))
    np.testing.assert_array_equal(ix.vectors(ids), base.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="float16 range"):
        ix.add(np.full((1, D), 1e5, np.float32), make_records(1, "big"))
    assert len(ix) == 50
    ix.close()
    with UnifiedIndex.open(str(tmp_path / "idx"), readonly=True) as ro:
        assert ro.vector_dtype == "float16" and ro.search(base[7], k=1)[0][0].id == ids[7]
    with pytest.raises(ValueError, match="vector_dtype"):
        UnifiedIndex.create(D, FP, vector_dtype="int8")


def test_candidates_respect_the_memory_budget():
    n, d = 1_000_000, 512
    # default budget (30 % of the raw vectors): compressed codes, smallest first
    assert candidate_structures(n, d, None) == ["IVF1024,PQ128x4fs", "IVF1024,PQ256x4fs", "IVF1024,SQ8"]
    assert candidate_structures(n, d, parse_memory("8G"))[0] == "HNSW32,Flat"
    assert candidate_structures(n, d, parse_memory("10M")) == []
    assert parse_memory("1.5G") == int(1.5 * (1 << 30)) and parse_memory("512M") == 512 << 20
    with pytest.raises(ValueError, match="memory size"):
        parse_memory("lots")


def test_tuning_config_rejects_bad_values():
    with pytest.raises(ValueError, match="target_recall"):
        TuningConfig(target_recall=1.5)
    with pytest.raises(ValueError, match="max_memory"):
        TuningConfig(max_memory=0)


def test_faiss_reads_tuned_parameters_from_the_plan(tmp_path):
    ix = UnifiedIndex.create(D, FP, tuning=SMALL)
    ix.add(_data(3000), make_records(3000))
    plan = ix.plan
    ivf = faiss.extract_index_ivf(faiss.deserialize_index(faiss.serialize_index(_cache_index(ix, tmp_path))))
    assert plan.nprobe is None or ivf.nprobe == plan.nprobe


def _cache_index(ix: UnifiedIndex, tmp_path) -> faiss.Index:
    ix.save(str(tmp_path / "copy"))
    index, _ = read_cache(str(tmp_path / "copy" / "vectors.faiss"), dim=D, factory=None)
    return index


def test_recall_counts_the_true_neighbours_there_are():
    """An index of 8 entries has 8 true neighbours per query, not k=10: finding all of them is recall 1."""
    truth = np.array([[3, 1, 4, 0, 5, 7, 2, 6]] * 2)
    found = np.array([[1, 3, 0, 4, 5, 2, 7, 6, -1, -1], [1, 3, 0, 4, 5, 2, 7, -1, -1, -1]])
    assert recall_at(found, truth) == 15 / 16
    padded = np.array([[3, 1, 4, -1, -1, -1, -1, -1, -1, -1]])
    assert recall_at(np.array([[4, 3, -1, -1, -1, -1, -1, -1, -1, -1]]), padded) == 2 / 3
    assert recall_at(np.array([[0] * 10]), np.array([list(range(10, 22))])) == 0.0
