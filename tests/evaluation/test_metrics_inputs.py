"""Metrics refuse bad inputs with a message naming the argument, and accept torch tensors as arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmretrieve.evaluation.metrics import (evaluate_pair, format_table, ranks_of_positives, retrieval_metrics,
                                           similarity_blocks)


def _unit(n, d=8, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("bad,message", [
    (np.zeros(8, np.float32), r"query_emb: expected a 2-D \(N, D\) array, got shape \(8,\)"),
    (np.zeros((0, 8), np.float32), r"query_emb: no rows"),
    (np.zeros((3, 8), np.int64), r"query_emb: expected floating point embeddings, got dtype int64"),
    (np.full((3, 8), np.nan, np.float32), r"query_emb: contains NaN or infinite values"),
])
def test_bad_query_embeddings_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        ranks_of_positives(bad, _unit(4), [[0]] * max(1, len(bad)))


def test_dimension_mismatch_block_and_positive_errors():
    q, items = _unit(3), _unit(4)
    with pytest.raises(ValueError, match="query_emb has dimension 8 but item_emb has 4"):
        ranks_of_positives(q, _unit(4, d=4), [[0]] * 3)
    with pytest.raises(ValueError, match="block=0 must be >= 1"):
        list(similarity_blocks(q, items, block=0))
    with pytest.raises(ValueError, match=r"positives: queries \[1\] have no positive item"):
        ranks_of_positives(q, items, [[0], [], [2]])
    with pytest.raises(ValueError, match=r"positives: positive indices must be in \[0, 4\); got 0..4"):
        ranks_of_positives(q, items, [[0], [4], [2]])
    with pytest.raises(ValueError, match="positives has 2 entries for 3 queries"):
        ranks_of_positives(q, items, [[0], [1]])
    with pytest.raises(ValueError, match="ties='random'"):
        ranks_of_positives(q, items, [[0], [1], [2]], ties="random")


def test_torch_tensors_give_the_numpy_results():
    q, items = _unit(6, seed=1), _unit(5, seed=2)
    truth = [0, 1, 2, 3, 4, 0]
    want = retrieval_metrics(q, items, truth)
    got = retrieval_metrics(torch.from_numpy(q).requires_grad_(True), torch.from_numpy(items), truth)
    assert got == want


def test_similarity_blocks_cover_every_query_row_exactly_once():
    q, items = _unit(10, seed=3), _unit(7, seed=4)
    blocks = list(similarity_blocks(q, items, block=4, max_block_elements=7 * 3))  # 3 rows per block
    assert [s for s, _ in blocks] == [0, 3, 6, 9]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), q @ items.T, rtol=1e-6)


def test_evaluate_pair_refuses_captions_of_unknown_or_missing_items():
    text, items = _unit(4, seed=5), _unit(3, seed=6)
    with pytest.raises(ValueError, match=r"caption_to_item: indices must be in \[0, 3\)"):
        evaluate_pair(text, items, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"caption_to_item: items \[2\] have no caption"):
        evaluate_pair(text, items, [0, 1, 1, 0])


def test_format_table_shows_nan_ints_and_a_single_row():
    table = format_table({"R@1": 50.0, "MdR": float("nan"), "queries": 4})
    lines = table.splitlines()
    assert lines[0].split() == ["direction", "R@1", "MdR", "queries"]
    assert lines[2].split() == ["50.0", "nan", "4"]
