"""The details of the metrics API that published figures and error reports depend on: default
conventions, options reaching both directions, ties across several queries, caption order, the
similarity blocks' size and dtype, exact error messages and the table layout."""
from __future__ import annotations

import numpy as np
import pytest

from metric_helpers import exact_sims

from mmretrieve.evaluation import (
    describe_conventions,
    evaluate_pair,
    format_table,
    median_rank,
    metrics_from_ranks,
    positive_ranks,
    retrieval_metrics,
    retrieval_metrics_grouped,
    retrieval_metrics_multi,
    similarity_blocks,
)


def _rand(n, d=6, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------- defaults
def test_default_conventions_are_item_order_floor_and_any_caption():
    assert describe_conventions() == describe_conventions("item-order", "floor", "any-caption")
    assert describe_conventions()["ties"].startswith("item-order: ")
    assert describe_conventions()["median"].startswith("floor: ")
    assert describe_conventions()["x2t"].startswith("any-caption: ")
    ranks = np.array([1, 2, 3, 4])
    assert median_rank(ranks) == 2.0 and median_rank(ranks, "midpoint") == 2.5
    assert metrics_from_ranks(ranks)["MdR"] == 2.0


def test_grouped_defaults_are_item_order_ties_and_floor_median():
    # every item scores 0.5 against both items' captions: item-order ranks item 0 first for both
    # queries (ranks 1 and 2), optimistic puts each query's own item first
    items = np.eye(2, dtype=np.float32)
    texts = np.full((2, 2), 0.5, dtype=np.float32)
    owners = [0, 1]
    got = retrieval_metrics_grouped(items, texts, owners)
    assert got == retrieval_metrics_grouped(items, texts, owners, ties="item-order", median="floor")
    assert got != retrieval_metrics_grouped(items, texts, owners, ties="optimistic")
    assert got["R@1"] == 50.0 and retrieval_metrics_grouped(items, texts, owners, ties="optimistic")["R@1"] == 100.0
    assert got["MdR"] == 1.0 and retrieval_metrics_grouped(items, texts, owners, median="midpoint")["MdR"] == 1.5


# ---------------------------------------------------------------------------------------- options reach both directions
@pytest.mark.parametrize("x2t", ["any-caption", "best-caption"])
def test_evaluate_pair_passes_every_option_to_both_directions(x2t):
    texts, items = _rand(12, seed=1), _rand(4, seed=2)
    owners = [i % 4 for i in range(12)]
    opts = dict(ks=(2, 3), ties="pessimistic", median="midpoint")
    got = evaluate_pair(texts, items, owners, x2t=x2t, **opts)
    assert got["t2x"] == retrieval_metrics(texts, items, owners, **opts)
    if x2t == "best-caption":
        assert got["x2t"] == retrieval_metrics_grouped(items, texts, owners, **opts)
    else:
        captions_of = [[c for c in range(12) if owners[c] == j] for j in range(4)]
        assert got["x2t"] == retrieval_metrics_multi(items, texts, captions_of, **opts)
    for direction in got.values():
        assert [k for k in direction if k.startswith("R@")] == ["R@2", "R@3"]


def test_ks_choose_the_recall_columns():
    q, items = exact_sims([[0.9, 0.1, 0.5], [0.1, 0.2, 0.9]])
    got = retrieval_metrics(q, items, [1, 2], ks=(1, 2))
    # ranks 3 and 1
    assert got == {"R@1": 50.0, "R@2": 50.0, "MdR": 2.0, "MnR": 2.0, "mAP@10": 2 / 3 * 100, "queries": 2}
    multi = retrieval_metrics_multi(q, items, [[1], [2]], ks=(3,), ties="pessimistic")
    assert list(multi) == ["R@3", "MdR", "MnR", "mAP@10", "queries"]


# ---------------------------------------------------------------------------------------- ties across queries
def test_tied_positives_are_counted_per_query():
    """Two queries, each with two positives tied with each other and with other items: the tied
    positives of one query never shift the ranks of another's."""
    q, items = exact_sims([
        [0.5, 0.5, 0.5, 0.9, 0.5],  # positives 1, 2; item 3 above; items 0 and 4 tie with them
        [0.7, 0.7, 0.1, 0.7, 0.7],  # positives 3, 4; items 0 and 1 tie with them
    ])
    pos = [[1, 2], [3, 4]]
    # pessimistic: a positive ranks after every tied non-positive and after its tied co-positives of
    # lower index; optimistic: after its tied co-positives of lower index only
    pess = positive_ranks(q, items, pos, ties="pessimistic")
    assert pess.of(0).tolist() == [4, 5] and pess.of(1).tolist() == [3, 4]
    opt = positive_ranks(q, items, pos, ties="optimistic")
    assert opt.of(0).tolist() == [2, 3] and opt.of(1).tolist() == [1, 2]
    order = positive_ranks(q, items, pos, ties="item-order")
    assert order.of(0).tolist() == [3, 4] and order.of(1).tolist() == [3, 4]


# ---------------------------------------------------------------------------------------- caption order
def test_best_caption_does_not_depend_on_the_order_of_the_captions():
    items, texts = _rand(5, seed=3), _rand(15, seed=4)
    owners = np.array([i % 5 for i in range(15)])
    perm = np.random.default_rng(5).permutation(15)
    sorted_order = np.argsort(owners, kind="stable")
    a = retrieval_metrics_grouped(items, texts[sorted_order], owners[sorted_order])
    b = retrieval_metrics_grouped(items, texts[perm], owners[perm])
    assert a == b
    # a caption order that changes the answer if captions were attributed to the wrong item
    shuffled = retrieval_metrics_grouped(items, texts[perm], owners)
    assert shuffled != a


def test_grouped_checks_one_owner_per_caption():
    items, texts = _rand(2), _rand(4, seed=1)
    with pytest.raises(ValueError, match="^caption_to_item has 3 entries for 4 captions$"):
        retrieval_metrics_grouped(items, texts, [0, 1, 1])


# ---------------------------------------------------------------------------------------- blocks
def test_similarity_blocks_default_to_4096_rows_and_float32():
    starts = [s for s, _ in similarity_blocks(np.ones((4100, 2)), np.ones((1, 2)))]
    assert starts == [0, 4096]
    (_, sims), = similarity_blocks(np.ones((3, 2), np.float64), np.ones((2, 2), np.float64))
    assert sims.dtype == np.float32 and sims.tolist() == [[2.0, 2.0]] * 3


def test_similarity_blocks_shrink_to_the_element_budget():
    q = np.ones((4, 2), np.float32)
    # one item, budget 2: two query rows per block
    assert [s for s, _ in similarity_blocks(q, np.ones((1, 2)), block=10, max_block_elements=2)] == [0, 2]
    # more items than the budget: still one row per block, never zero
    blocks = list(similarity_blocks(q, np.ones((5, 2)), block=10, max_block_elements=4))
    assert [s for s, _ in blocks] == [0, 1, 2, 3] and all(b.shape == (1, 5) for _, b in blocks)


# ---------------------------------------------------------------------------------------- exact errors
def test_every_argument_is_named_in_its_error():
    good, flat = np.ones((2, 3), np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"^queries: expected a 2-D"):
        list(similarity_blocks(flat, good))
    with pytest.raises(ValueError, match=r"^items: expected a 2-D"):
        list(similarity_blocks(good, flat))
    with pytest.raises(ValueError, match=r"^item_emb: expected a 2-D"):
        positive_ranks(good, flat, [[0], [1]])
    with pytest.raises(ValueError, match=r"^item_emb: expected a 2-D"):
        retrieval_metrics_grouped(flat, good, [0, 1])
    with pytest.raises(ValueError, match=r"^text_emb: expected a 2-D"):
        retrieval_metrics_grouped(good, flat, [0, 1])
    with pytest.raises(ValueError, match=r"^item_emb: expected a 2-D"):
        evaluate_pair(good, flat, [0, 1])


@pytest.mark.parametrize("call", [evaluate_pair, describe_conventions])
def test_conventions_are_named_with_their_choices(call):
    args = (np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), [0, 1]) if call is evaluate_pair else ()
    with pytest.raises(ValueError, match=r"^ties='worst': choose one of 'item-order', 'pessimistic', 'optimistic'$"):
        call(*args, ties="worst")
    with pytest.raises(ValueError, match=r"^median='mean': choose one of 'floor', 'midpoint'$"):
        call(*args, median="mean")
    with pytest.raises(ValueError, match=r"^x2t='all': choose one of 'any-caption', 'best-caption'$"):
        call(*args, x2t="all")


def test_long_lists_of_bad_queries_and_items_show_the_first_ten():
    q = np.eye(12, dtype=np.float32)
    with pytest.raises(ValueError, match=r"^positives: queries \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] have no positive item$"):
        positive_ranks(q, q, [[]] * 12)
    with pytest.raises(ValueError, match=r"^caption_to_item: items \[1, 2, 3, 4, 5, 6, 7, 8, 9, 10\] have no caption"):
        evaluate_pair(np.ones((1, 12), np.float32), q, [0])


# ---------------------------------------------------------------------------------------- table
def test_table_aligns_names_left_and_figures_right_and_leaves_missing_cells_empty():
    table = format_table({"t2x": {"R@1": 5.0, "MdR": 12.0}, "custom": {"R@1": 100.0, "queries": 7}})
    assert table.splitlines() == [
        "direction     R@1   MdR  queries",
        "----------  -----  ----  -------",
        "text->item    5.0  12.0         ",
        "custom      100.0              7",
    ]


@pytest.mark.parametrize("x2t", ["any-caption", "best-caption"])
def test_evaluate_pair_applies_ties_and_median_to_both_directions_on_tied_scores(x2t):
    """0/1 embeddings: many exactly tied scores, so each tie policy and median convention changes the
    figures of both directions, and each must equal the direction computed on its own."""
    rng = np.random.default_rng(10)
    texts = rng.integers(0, 2, (12, 4)).astype(np.float32)
    items = rng.integers(0, 2, (6, 4)).astype(np.float32)  # an even number of queries both ways
    owners = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    captions_of = [[c for c in range(12) if owners[c] == j] for j in range(6)]
    seen = {}
    for ties in ("item-order", "pessimistic", "optimistic"):
        for median in ("floor", "midpoint"):
            got = evaluate_pair(texts, items, owners, ties=ties, median=median, x2t=x2t)
            assert got["t2x"] == retrieval_metrics(texts, items, owners, ties=ties, median=median)
            back = (retrieval_metrics_grouped(items, texts, owners, ties=ties, median=median) if x2t == "best-caption"
                    else retrieval_metrics_multi(items, texts, captions_of, ties=ties, median=median))
            assert got["x2t"] == back
            seen[ties, median] = got
    for direction in ("t2x", "x2t"):  # the data tells the options apart in both directions
        assert len({repr(sorted(g[direction].items())) for (t, m), g in seen.items() if m == "floor"}) == 3
        assert seen["pessimistic", "floor"][direction]["MdR"] != seen["pessimistic", "midpoint"][direction]["MdR"]
