"""Fixtures for the index tests."""
from __future__ import annotations

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
