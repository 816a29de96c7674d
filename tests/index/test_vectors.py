"""The faiss side of an index on its own: the cache header's factory, and exhaustive search."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index.vectors import IdFilter, make_faiss_index, read_cache, search_index, train_index, write_cache

DIM = 8


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_cache_header_without_a_factory_string_is_refused(tmp_path):
    index = make_faiss_index(DIM, "Flat")
    index.add_with_ids(_unit(3), np.arange(3, dtype=np.int64))
    path = str(tmp_path / "vectors.faiss")
    write_cache(path, index, generation=1, uuid="u", dim=DIM, factory=None)
    with pytest.raises(IndexCorruptError, match=f"^{path}: header lacks the factory string; "):
        read_cache(path, dim=DIM, factory=None)
    write_cache(path, index, generation=1, uuid="u", dim=DIM, factory="Flat")
    back, header = read_cache(path, dim=DIM, factory=None)
    assert header["factory"] == "Flat" and header["generation"] == 1 and back.ntotal == 3


def test_exhaustive_search_visits_every_list_without_an_id_filter():
    """IVF with nprobe=1 misses neighbours in other lists; exhaustive search (all lists) equals exact
    search, with or without a filter naming every id."""
    base, queries = _unit(400), _unit(20, seed=1)
    ids = np.arange(400, dtype=np.int64) * 3
    ivf = make_faiss_index(DIM, "IVF16,Flat")
    train_index(ivf, base, "IVF16,Flat")
    ivf.add_with_ids(base, ids)
    faiss.extract_index_ivf(ivf).nprobe = 1
    exact = make_faiss_index(DIM, "Flat")
    exact.add_with_ids(base, ids)
    _, want = search_index(exact, queries, 10)
    _, probed = search_index(ivf, queries, 10)
    assert not np.array_equal(probed, want)  # one list is not enough here
    _, got = search_index(ivf, queries, 10, exhaustive=True)
    assert np.array_equal(got, want)
    _, filtered = search_index(ivf, queries, 10, IdFilter(ids), exhaustive=True)
    assert np.array_equal(filtered, want)
    assert faiss.extract_index_ivf(ivf).nprobe == 1  # a per-search parameter, the index is unchanged
