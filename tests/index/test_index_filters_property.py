"""Property test: metadata filters select exactly what a Python reference selects."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from index_helpers import DIM, FP, unit_vectors

from mmretrieve.index import Record, UnifiedIndex

KEYS = ["a", "b.c", "with space", "ü", "x'y", "--"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 2.0]),
                    st.text(st.characters(blacklist_characters="\x00"), max_size=4))
metadata = st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4)
where = st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, st.lists(scalars, max_size=3)),
                        min_size=1, max_size=2)


def _same(stored, wanted) -> bool:
    if wanted is None or stored is None:
        return wanted is None and stored is None
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and wanted == stored
    if isinstance(wanted, str) or isinstance(stored, str):
        return isinstance(wanted, str) and isinstance(stored, str) and wanted == stored
    return float(wanted) == float(stored)


def _matches(meta: dict, flt: dict) -> bool:
    for key, value in flt.items():
        values = value if isinstance(value, list) else [value]
        if key not in meta or not any(_same(meta[key], v) for v in values):
            return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metas=st.lists(metadata, min_size=1, max_size=12), flt=where)
def test_where_matches_python_reference(metas, flt):
    vecs = unit_vectors(len(metas))
    ix = UnifiedIndex.create(DIM, FP)
    ids = ix.add(vecs, [Record(f"/m{i}", "image", metadata=m) for i, m in enumerate(metas)])
    got = {h.id for h in ix.search(np.ones(DIM, np.float32), k=len(metas), where=flt)[0]}
    expected = {ids[i] for i, m in enumerate(metas) if _matches(m, flt)}
    assert got == expected
    ix.close()


def test_nul_characters_are_refused_in_metadata_and_filters():
    """SQLite's JSON functions end a string at NUL ("a\\x00" would equal "a"): refused both ways."""
    import pytest

    with UnifiedIndex.create(DIM, FP) as ix:
        for meta in ({"a": "x\x00"}, {"a\x00": 1}, {"a": ["ok", {"b": "\x00"}]}):
            with pytest.raises(ValueError, match="NUL"):
                ix.add(unit_vectors(1), [Record("/m", "image", metadata=meta)])
        assert len(ix) == 0
        ix.add(unit_vectors(1), [Record("/m", "image", metadata={"a": ""})])
        with pytest.raises(ValueError, match="NUL"):
            ix.search(np.ones(DIM, np.float32), k=1, where={"a": "\x00"})
        assert len(ix.search(np.ones(DIM, np.float32), k=1, where={"a": ""})[0]) == 1
