"""Retrieval metrics on hand-built embeddings whose ranks are known exactly."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from mmretrieve.evaluation import (
    evaluate_pair,
    format_table,
    ranks_of_positives,
    retrieval_metrics,
    retrieval_metrics_multi,
    similarity_blocks,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_identity_is_perfect():
    e = np.eye(20, dtype=np.float32)
    m = retrieval_metrics(e, e, list(range(20)))
    assert m == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0, "mAP@10": 100.0, "queries": 20}


def test_known_rank_per_query():
    # items are one-hot, so a query's scores are its own coordinates: query i puts its positive at rank i+1
    n = 20
    items = np.eye(n, dtype=np.float32)
    queries = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        order = others[:i] + [i] + others[i:]  # positive at position i
        queries[i, order] = np.linspace(1.0, 0.0, n)
    m = retrieval_metrics(queries, items, list(range(n)))
    assert m["R@1"] == pytest.approx(5.0) and m["R@5"] == pytest.approx(25.0) and m["R@10"] == pytest.approx(50.0)
    # ranks 1..20: floor(median of 0..19 = 9.5) + 1 = 10; the 1-based midpoint is 10.5
    assert m["MdR"] == 10.0 and m["MnR"] == 10.5
    assert retrieval_metrics(queries, items, list(range(n)), median="midpoint")["MdR"] == 10.5
    # mAP@10 with one positive: mean of 1/rank over ranks <= 10 = H_10 / 20 = (7381 / 2520) / 20
    assert m["mAP@10"] == pytest.approx(100 * 7381 / 2520 / 20)
    assert ranks_of_positives(queries, items, [[i] for i in range(n)]).tolist() == list(range(1, n + 1))


def test_reversed_pairing():
    # correct item of query i is item n-1-i, but the identity puts item i first: every positive is
    # ranked by the score it gets, which for one-hot items is 0 except one 1 -> rank is n (pessimistic tie
    # with the n-2 other zeros) or 2 (optimistic)
    n = 9
    e = np.eye(n, dtype=np.float32)
    target = list(range(n - 1, -1, -1))
    centre = n // 2  # the middle query's reversed target is itself
    r = ranks_of_positives(e, e, [[t] for t in target], ties="pessimistic")
    assert r[centre] == 1 and all(r[i] == n for i in range(n) if i != centre)
    # item order: 1 (the query's own item) + the zero-scored items with a lower index than the target
    assert ranks_of_positives(e, e, [[t] for t in target]).tolist() == [9, 8, 7, 6, 1, 5, 4, 3, 2]
    ro = ranks_of_positives(e, e, [[t] for t in target], ties="optimistic")
    assert ro[centre] == 1 and all(ro[i] == 2 for i in range(n) if i != centre)
    m = retrieval_metrics(e, e, target, ties="pessimistic")
    assert m["R@1"] == pytest.approx(100 / n) and m["MdR"] == n


def test_collapsed_embeddings_are_not_flattered():
    same = np.ones((10, 4), dtype=np.float32)
    assert retrieval_metrics(same, same, list(range(10)), ties="pessimistic")["R@1"] == 0.0
    assert ranks_of_positives(same, same, [[i] for i in range(10)]).tolist() == list(range(1, 11))  # item order
    assert retrieval_metrics(same, same, list(range(10)), ties="optimistic")["R@1"] == 100.0


def test_multi_positive_counts_best_caption():
    # 2 items x 3 captions; item 0 ranks its captions 4th, 1st, 6th -> best rank 1
    items = np.eye(6, dtype=np.float32)[:2]
    sims0 = np.array([0.3, 0.9, 0.1, 0.8, 0.7, 0.2])  # captions 0,1,2 are item 0's
    sims1 = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.6])  # captions 3,4,5 are item 1's: best 0.6 -> rank 4
    texts = np.stack([sims0, sims1], axis=1).astype(np.float32)  # (6 captions, 2 dims)
    texts = np.concatenate([texts, np.zeros((6, 4), np.float32)], axis=1)
    r = ranks_of_positives(items, texts, [[0, 1, 2], [3, 4, 5]])
    assert r.tolist() == [1, 4]
    m = retrieval_metrics_multi(items, texts, [[0, 1, 2], [3, 4, 5]])
    assert m["R@1"] == 50.0 and m["R@5"] == 100.0 and m["MdR"] == 2.0  # floor(median(0, 3)) + 1
    assert retrieval_metrics_multi(items, texts, [[0, 1, 2], [3, 4, 5]], median="midpoint")["MdR"] == 2.5


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_blocks_match_brute_force(block):
    rng = np.random.default_rng(0)
    items = _unit(rng.standard_normal((150, 16)))
    owners = np.repeat(np.arange(150), 5)
    texts = _unit(items[owners] + 0.6 * rng.standard_normal((750, 16)))
    s = texts @ items.T
    pos = s[np.arange(750), owners]
    expect = 1 + (s > pos[:, None]).sum(1)
    got = ranks_of_positives(texts, items, [[o] for o in owners], block=block)
    np.testing.assert_array_equal(got, expect)
    # image->text: best of the five captions, brute force
    st = s.T
    best = np.array([st[j, owners == j].max() for j in range(150)])
    neg = np.array([(st[j, owners != j] > best[j]).sum() for j in range(150)])
    res = evaluate_pair(texts, items, owners, block=block)
    assert res["x2t"]["MnR"] == pytest.approx(float(np.mean(1 + neg)))
    assert res["t2x"]["R@1"] == pytest.approx(100 * np.mean(expect == 1))
    assert 0 < res["t2x"]["R@1"] < 100  # the case is not trivial


def test_blocks_cover_rows_and_bound_memory():
    q = np.zeros((100, 4), np.float32)
    items = np.zeros((50, 4), np.float32)
    blocks = list(similarity_blocks(q, items, block=30, max_block_elements=1000))
    assert [b for b, _ in blocks] == list(range(0, 100, 20))  # 1000 elements // 50 items = 20 rows
    assert all(s.shape[1] == 50 and s.shape[0] * 50 <= 1000 for _, s in blocks)


def test_coco_5k_scale_without_full_matrix():
    # 25,000 captions x 5,000 images: the full float32 matrix would be 500 MB
    rng = np.random.default_rng(1)
    d = 8
    items = _unit(rng.standard_normal((5000, d)))
    owners = np.repeat(np.arange(5000), 5)
    texts = _unit(items[owners] + 0.05 * rng.standard_normal((25000, d)))
    tracemalloc.start()
    try:
        res = evaluate_pair(texts, items, owners)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200e6, f"peak {peak / 1e6:.0f} MB"
    assert res["t2x"]["queries"] == 25000 and res["x2t"]["queries"] == 5000
    assert res["t2x"]["R@10"] > res["t2x"]["R@1"] > 0


def test_torch_input_and_errors():
    torch = pytest.importorskip("torch")
    e = torch.eye(5)
    assert retrieval_metrics(e, e, range(5))["R@1"] == 100.0
    with pytest.raises(ValueError, match="dimension"):
        retrieval_metrics(np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32), [0, 1, 2])
    bad = np.eye(3, dtype=np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(bad, np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        retrieval_metrics(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), [0, 1, 3])
    with pytest.raises(ValueError, match="3 queries"):
        retrieval_metrics(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"items \[2\] have no caption"):
        evaluate_pair(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), [0, 1, 1])


def test_table_and_json():
    e = np.eye(4, dtype=np.float32)
    res = evaluate_pair(e, e, [0, 1, 2, 3])
    table = format_table(res)
    lines = table.splitlines()
    assert lines[0].split() == ["direction", "R@1", "R@5", "R@10", "MdR", "MnR", "mAP@10", "queries"]
    assert lines[2].split()[:2] == ["text->item", "100.0"] and lines[3].startswith("item->text")
    assert len({len(line) for line in lines}) == 1  # aligned
    assert json.loads(json.dumps(res)) == res
