"""Fixtures for the index tests."""
from __future__ import annotations

import faiss
import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.index import UnifiedIndex


@pytest.fixture
def filled(tmp_path):
    """A 200-row on-disk index (closed afterwards)."""
    vecs = unit_vectors(200)
    ix = UnifiedIndex.create(DIM, FP, path=str(tmp_path / "idx"))
    ids = ix.add(vecs, make_records(200))
    yield ix, vecs, ids
    ix.close()


@pytest.fixture(autouse=True, scope="session")
def _one_faiss_thread():
    """faiss's OpenMP threads spin badly on a machine shared with other test runs; these tests build
    small structures where one thread is fastest anyway."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
