"""Near-duplicate groups, search-time dedup and the duplicates command."""
from __future__ import annotations

import csv
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

import mmretrieve as mmr
from mmretrieve.cli import main
from mmretrieve.duplicates import DEFAULT_DUPLICATE_THRESHOLD, collapse_hits, dedup_search
from mmretrieve.index import Record


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _near(base, cos, rng):
    """A unit vector with exactly cosine ``cos`` to the unit vector ``base``."""
    other = rng.standard_normal(base.shape).astype(np.float32)
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    return _unit(cos * base + np.sqrt(1 - cos**2) * other)


@pytest.fixture
def planted(tiny_retriever):
    """Vectors with known similarities, stored through the public index API.

    a.jpg ~ b.jpg at 0.99, b.jpg ~ c.jpg at 0.975 (a chain: one group), d.jpg distinct (0.9 to a),
    e.wav ~ f.wav at 0.98, long.mp4 two windows at 0.995 to each other (one file: never a pair),
    t1/t2 texts at 0.999 (in-memory entries, grouped by id).
    """
    r = tiny_retriever
    dim = r.index.dim
    rng = np.random.default_rng(0)
    a = _unit(rng.standard_normal(dim))
    b = _near(a, 0.99, rng)
    c = _near(b, 0.975, rng)
    d = _near(a, 0.90, rng)
    e = _unit(rng.standard_normal(dim))
    f = _near(e, 0.98, rng)
    w1 = _unit(rng.standard_normal(dim))
    w2 = _near(w1, 0.995, rng)
    t1 = _unit(rng.standard_normal(dim))
    t2 = _near(t1, 0.999, rng)
    img = lambda p: Record(path=p, modality="image")
    records = [img("/m/a.jpg"), img("/m/b.jpg"), img("/m/c.jpg"), img("/m/d.jpg"),
               Record(path="/m/e.wav", modality="audio"), Record(path="/m/f.wav", modality="audio"),
               Record(path="/m/long.mp4", modality="video", start=0.0, end=10.0),
               Record(path="/m/long.mp4", modality="video", start=10.0, end=20.0),
               Record(path=None, modality="text", metadata={"text": "one"}),
               Record(path=None, modality="text", metadata={"text": "two"})]
    vectors = np.stack([a, b, c, d, e, f, w1, w2, t1, t2])
    ids = r.index.add(vectors, records)
    return r, dict(zip(["a", "b", "c", "d", "e", "f", "w1", "w2", "t1", "t2"], ids)), vectors


def _paths(groups):
    return [sorted(i.path or f"#{i.id}" for i in g.items) for g in groups]


def test_groups_chain_files_and_never_pair_a_files_own_windows(planted):
    r, ids, _ = planted
    groups = r.duplicates(0.97)
    # bigger groups first, then the tighter ones
    assert _paths(groups) == [["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"], sorted([f"#{ids['t1']}", f"#{ids['t2']}"]),
                              ["/m/e.wav", "/m/f.wav"]]
    first = groups[0]
    assert first.modality is mmr.Modality.IMAGE
    assert [round(i.similarity, 3) for i in first.items] == [0.99, 0.99, 0.975]
    assert round(first.similarity, 3) == 0.975


def test_threshold_moves_the_groups(planted):
    r, _, vectors = planted
    bc = float(vectors[1] @ vectors[2])
    assert _paths(r.duplicates(bc - 1e-5))[0] == ["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"]
    assert _paths(r.duplicates(bc + 1e-4, modality="image")) == [["/m/a.jpg", "/m/b.jpg"]]
    assert _paths(r.duplicates(0.89, modality="image")) == [["/m/a.jpg", "/m/b.jpg", "/m/c.jpg", "/m/d.jpg"]]
    assert r.duplicates(0.9999) == []


def test_modality_filter(planted):
    r, _, _ = planted
    assert _paths(r.duplicates(0.97, modality="audio")) == [["/m/e.wav", "/m/f.wav"]]
    assert _paths(r.duplicates(0.97, modality=["audio", "image"])) == [
        ["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"], ["/m/e.wav", "/m/f.wav"]]
    with pytest.raises(ValueError, match="'smell' is not a modality"):
        r.duplicates(0.97, modality="smell")
    with pytest.raises(ValueError, match="threshold=1.5"):
        r.duplicates(1.5)


def test_dedup_collapses_near_identical_hits_and_still_returns_k(planted):
    r, ids, vectors = planted
    q = vectors[0][None, :]
    plain = r.index.search(q, 3, modality="image")[0]
    assert [h.id for h in plain] == [ids["a"], ids["b"], ids["c"]]
    deduped = dedup_search(r.index, q, 3, 0.97, modality="image")[0]
    # b goes (0.99 to a); c stays: it is near b, which was dropped, and below 0.97 to a, which was kept
    assert [h.id for h in deduped] == [ids["a"], ids["c"], ids["d"]]
    hits = r.index.search(q, 10)[0]
    kept = collapse_hits(hits, r.index.vectors([h.id for h in hits]), 0.97)
    assert ids["b"] not in [h.id for h in kept] and ids["c"] in [h.id for h in kept]  # c is 0.975 to b, < 0.97 to a
    assert len(dedup_search(r.index, q, 5, 0.97)[0]) == 5


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """An indexed folder (sample preset) holding two distinct images and a JPEG re-encode of the first."""
    from mmretrieve.data.synthetic import make_corpus

    root = tmp_path_factory.mktemp("dups")
    corpus = make_corpus(str(root / "c"), n_images=2, n_videos=1, n_audio=1, seed=3)
    first = corpus.of("image")[0].path
    Image.open(first).convert("RGB").save(str(root / "c" / "copy.jpg"), quality=60)
    index = str(root / "dups.mmr")
    with mmr.Retriever.create("sample", path=index, num_workers=0) as r:
        r.add(str(root / "c"), progress=False)
        r.save()
    return index, os.path.realpath(first), os.path.realpath(str(root / "c" / "copy.jpg"))


def test_a_jpeg_copy_is_found_at_the_default_threshold(copies):
    index, first, copy = copies
    with mmr.Retriever.load(index, readonly=True) as r:
        groups = r.duplicates()
        assert _paths(groups) == [sorted([first, copy])]
        hits = r.search(pathlib.Path(first), modality="image", k=3)
        assert len(hits) == 3 and {hits[0].path, hits[1].path} == {first, copy}
        deduped = r.search(pathlib.Path(first), modality="image", k=3, dedup=DEFAULT_DUPLICATE_THRESHOLD)
        assert [h.path for h in deduped] == [hits[0].path, hits[2].path]


def test_duplicates_command_writes_csv_json_and_html(copies, tmp_path, capsys):
    index, first, copy = copies
    csv_path, json_path, html_path = tmp_path / "d.csv", tmp_path / "d.json", tmp_path / "d.html"
    code = main(["duplicates", index, "--csv", str(csv_path), "--json", str(json_path), "--html", str(html_path)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("1 group(s) of near-duplicates, 2 item(s), at cosine >= 0.97")
    rows = list(csv.DictReader(open(csv_path)))
    assert sorted(r["path"] for r in rows) == sorted([first, copy]) and {r["group"] for r in rows} == {"1"}
    doc = json.load(open(json_path))
    assert doc["threshold"] == 0.97 and len(doc["groups"]) == 1 and doc["groups"][0]["modality"] == "image"
    page = open(html_path).read()
    assert page.count("<img alt='' src='data:image/jpeg;base64,") == 2 and "Group 1: 2 image item(s)" in page
    code = main(["duplicates", index, "--json", "-", "--modality", "audio"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["groups"] == [] and "0 group(s)" in captured.err
