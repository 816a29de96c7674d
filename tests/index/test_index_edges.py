"""UnifiedIndex at its edges: refusals at create/open, closed indexes, empty inputs, filtered search
exactness for every faiss structure, untrainable saves, foreign caches, snapshots into empty folders."""
from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index import UnifiedIndex


def test_create_refuses_an_existing_index_and_a_non_empty_folder(tmp_path):
    path = str(tmp_path / "ix")
    UnifiedIndex.create(DIM, FP, path=path).close()
    with pytest.raises(FileExistsError, match="already an mmretrieve index; use UnifiedIndex.open"):
        UnifiedIndex.create(DIM, FP, path=path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="exists and is not an empty directory"):
        UnifiedIndex.create(DIM, FP, path=str(tmp_path / "full"))
    assert (tmp_path / "full" / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="dim=0 must be a positive int"):
        UnifiedIndex.create(0, FP)


def test_open_names_a_folder_that_is_not_an_index_and_a_damaged_meta_table(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(IndexCorruptError, match="manifest.json: missing; .* is not an mmretrieve index"):
        UnifiedIndex.open(str(tmp_path / "plain"))
    path = str(tmp_path / "ix")
    UnifiedIndex.create(DIM, FP, path=path).close()
    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    conn.execute("UPDATE meta SET value = 'sixteen' WHERE key = 'dim'")
    conn.commit()
    conn.close()
    with pytest.raises(IndexCorruptError, match="meta.sqlite: meta table is damaged"):
        UnifiedIndex.open(path, readonly=True)


def test_a_closed_index_refuses_use_and_empty_inputs_are_no_ops(tmp_path):
    ix = UnifiedIndex.create(DIM, FP, path=str(tmp_path / "ix"))
    assert repr(ix) == f"UnifiedIndex({str(tmp_path / 'ix')!r}, dim={DIM}, factory='auto', structure='Flat', writer)"
    assert ix.remove([]) == 0 and ix.add(np.zeros((0, DIM), np.float32), []) == []
    ids = ix.add(unit_vectors(5), make_records(5))
    assert ix.vectors([]).shape == (0, DIM)
    np.testing.assert_array_equal(ix.vectors([ids[3], ids[1]]), unit_vectors(5)[[3, 1]])
    with pytest.raises(KeyError, match="ids not in index"):
        ix.vectors([999])
    got = np.concatenate([v for _, v in ix.iter_vectors(chunk=2)])
    np.testing.assert_array_equal(got, unit_vectors(5))
    ix.close()
    ix.close()  # twice is fine
    with pytest.raises(ValueError, match="is closed"):
        len(ix)
    assert repr(UnifiedIndex.create(DIM, FP)) == f"UnifiedIndex('<in-memory>', dim={DIM}, factory='auto', structure='Flat', writer)"


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW8", "IVF4,PQ4"])
def test_filtered_search_returns_k_hits_of_the_filtered_rows(factory):
    """k hits, all of them filtered rows, for every structure; the exact top-k for Flat (the approximate
    structures search as approximately with a filter as without one)."""
    vecs = unit_vectors(400, seed=11)
    ix = UnifiedIndex.create(DIM, FP, factory=factory)
    ids = np.asarray(ix.add(vecs, make_records(400)))
    queries = unit_vectors(6, seed=12)
    hits = ix.search(queries, k=7, where={"colour": "red"}, modality=["image", "audio"])
    allowed = np.array([n for n in range(400) if n % 3 == 0 and n % 4 in (0, 2)])  # red; image=0, audio=2
    for q, row in zip(queries, hits):
        want = ids[allowed[np.argsort(-(vecs[allowed] @ q), kind="stable")]][:7]
        assert len(row) == 7 and all(h.metadata["colour"] == "red" for h in row)
        assert {h.id for h in row} <= set(ids[allowed].tolist())
        if factory == "Flat":
            assert [h.id for h in row] == want.tolist()


def test_an_untrainable_index_saves_without_a_cache_and_trains_once_it_can(tmp_path):
    path = str(tmp_path / "ivf")
    ix = UnifiedIndex.create(DIM, FP, factory="IVF8,Flat", path=path)
    ix.add(unit_vectors(3), make_records(3))
    ix.save()  # too few vectors to train: the database is saved, the cache is not written
    assert not os.path.exists(os.path.join(path, "vectors.faiss"))
    ix.add(unit_vectors(300, seed=2), make_records(300, "g"))
    ix.save()
    assert os.path.exists(os.path.join(path, "vectors.faiss"))
    ix.close()


def test_a_cache_from_another_index_is_ignored_and_rebuilt(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for path, seed in ((a, 1), (b, 2)):
        ix = UnifiedIndex.create(DIM, FP, path=path)
        ix.add(unit_vectors(30, seed=seed), make_records(30))
        ix.save()
        ix.close()
    shutil.copyfile(os.path.join(b, "vectors.faiss"), os.path.join(a, "vectors.faiss"))
    with UnifiedIndex.open(a, readonly=True) as ro:
        q = unit_vectors(30, seed=1)[:5]
        assert [row[0].id for row in ro.search(q, k=1)] == [1, 2, 3, 4, 5]


def test_snapshot_into_an_empty_folder(tmp_path):
    ix = UnifiedIndex.create(DIM, FP)
    ix.add(unit_vectors(4), make_records(4))
    (tmp_path / "empty").mkdir()
    ix.save(str(tmp_path / "empty"))
    with UnifiedIndex.open(str(tmp_path / "empty"), readonly=True) as ro:
        assert len(ro) == 4 and ro.search(unit_vectors(4)[2], k=1)[0][0].id == 3
