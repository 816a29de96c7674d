"""Ray Data embedding on a local 2-CPU Ray: same vectors as Retriever.add, single-writer commits, failures."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray tests need the extra: pip install 'mmretrieve[ray]'")
pytest.importorskip("ray.data", reason="Ray tests need Ray Data: pip install 'mmretrieve[ray]'")

import mmretrieve as mmr
from mmretrieve.distributed import embed_with_ray, index_with_ray

TINY = "tiny-random"


def _entries(index):
    ids = index._store.all_ids()  # test-only peek: every entry with its vector
    return {(h.path, h.start, h.end, h.modality.value): v for h, v in zip(index.get(ids), index.vectors(ids))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, media_factory):
    root = str(tmp_path_factory.mktemp("raymedia"))
    files = media_factory(root)
    return root, files


@pytest.fixture(scope="module")
def reference(folder):
    root, _ = folder
    r = mmr.Retriever.create(TINY, num_workers=0)
    report = r.add(root, progress=False, metadata={"src": "ref"})
    yield r, report
    r.close()


def test_index_with_ray_equals_retriever_add(local_ray, folder, reference, tmp_path):
    root, files = folder
    ref, ref_report = reference
    path = str(tmp_path / "idx")
    r = mmr.Retriever.create(TINY, path=path, num_workers=0)
    out = index_with_ray(root, r, num_actors=1, batch_size=4, metadata={"src": "ref"})
    rep = out.report
    assert sorted(rep.added) == sorted(ref_report.added) and rep.entries == ref_report.entries
    assert sorted(p for p, _ in rep.failed) == sorted(files["bad"])
    assert all(reason for _, reason in rep.failed)
    got, want = _entries(r.index), _entries(ref.index)
    assert set(got) == set(want)  # same files, same windows (the long video/recording: 3 windows each)
    for key, vec in want.items():
        np.testing.assert_allclose(got[key], vec, atol=1e-5, err_msg=str(key))
    assert r.search("a red square", k=5) and [h.path for h in r.search(files["image"][0], k=3)] == \
        [h.path for h in ref.search(files["image"][0], k=3)]
    assert r.index.get([r.search(files["audio"][0], k=1)[0].id])[0].metadata == {"src": "ref"}
    # second run: nothing re-embedded; a changed file is replaced (the driver is the only writer)
    again = index_with_ray(root, r).report
    assert not again.added and not again.updated and sorted(again.unchanged) == sorted(rep.added)
    shutil.copyfile(files["image"][1], files["image"][0])
    third = index_with_ray(files["image"][0], r).report
    assert third.updated == (files["image"][0],)
    r.close()
    # and through an index path: the driver opens (and locks) it itself
    assert index_with_ray(files["audio"], path).report.unchanged == tuple(files["audio"])


def test_embed_with_ray_rows(local_ray, folder, reference):
    root, files = folder
    ref, _ = reference
    rows = list(embed_with_ray([files["video"][2], files["audio"][0], files["bad"][0], os.path.join(root, "notes.txt")],
                               preset=TINY, num_actors=1, batch_size=8))
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {files["bad"][0], os.path.realpath(os.path.join(root, "notes.txt"))}
    good = [r for r in rows if not r["error"]]
    long_video = sorted((r for r in good if r["path"] == files["video"][2]), key=lambda r: r["window"])
    assert [(r["start"], r["end"]) for r in long_video] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    want = _entries(ref.index)
    for r in good:
        assert r["vector"].shape == (ref.encoder.dim,) and r["content_hash"].startswith("sha256:")
        assert r["size"] == os.path.getsize(r["path"]) and r["encoder_id"] == ref.encoder.fingerprint_id()
        np.testing.assert_allclose(r["vector"], want[(r["path"], r["start"], r["end"], r["modality"])], atol=1e-5)


def test_texts_and_argument_errors(local_ray):
    rows = list(embed_with_ray(["a dog", "a cat"], preset=TINY, modality="text"))
    r = mmr.Retriever.create(TINY, num_workers=0)
    want = [r.embed("a dog"), r.embed("a cat")]
    by_text = {row["text"]: row["vector"] for row in rows}
    np.testing.assert_allclose(by_text["a dog"], want[0], atol=1e-5)
    np.testing.assert_allclose(by_text["a cat"], want[1], atol=1e-5)
    with pytest.raises(ValueError, match="num_actors"):
        index_with_ray("x", r, num_actors=0)
    with pytest.raises(TypeError, match="Retriever.add"):
        list(embed_with_ray(np.zeros((8, 8, 3), np.uint8), preset=TINY, modality="image"))
    r.close()
