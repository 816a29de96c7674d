"""Composed-retrieval metrics: synthetic triplets with exact answers, CIRR and FashionIQ protocols."""
from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch

from mmretrieve.data.cirr import read_cirr
from mmretrieve.data.fashioniq import read_fashioniq
from mmretrieve.data.synthetic import VOCABULARY, SyntheticItem
from mmretrieve.evaluation.composed import (cirr_metrics, cirr_submission, composed_recall, composed_triplets,
                                            evaluate_composed_split, fashioniq_average, fashioniq_metrics,
                                            holdout_combinations, modification_text)
from mmretrieve.modality import Modality
from mmretrieve.models import create_encoder
from mmretrieve.models.inversion import TextualInversion, config_for
from mmretrieve.testing.composed import make_cirr, make_fashioniq



def _gallery(modality="image"):
    vocab = VOCABULARY[modality]
    return [SyntheticItem(f"/x/{i}.png", Modality(modality), (), dict(zip(vocab, combo)))
            for i, combo in enumerate(product(*vocab.values()))]


def test_synthetic_triplets_change_exactly_one_attribute():
    g = _gallery()
    trips = composed_triplets(g)
    # per reference: 5 other colours + 1 size + 4 positions + 3 shapes
    assert len(trips) == 240 * 13
    for t in trips[:500]:
        a, b = g[t.reference].attributes, g[t.target].attributes
        assert [k for k in a if a[k] != b[k]] == [t.attribute] and b[t.attribute] == t.value
        assert t.text == modification_text("image", t.attribute, t.value)
    assert modification_text("image", "position", "left") == "move it on the left"
    assert modification_text("video", "direction", "up") == "make it move upwards"
    v = composed_triplets(_gallery("video"))
    assert len(v) == 96 * (5 + 3 + 3)


def test_held_out_triplets_keep_reference_and_target_held_out():
    g = _gallery()
    held = holdout_combinations("image", 0.3, seed=0)
    assert len(held) == 72 and held == holdout_combinations("image", 0.3, seed=0)
    trips = composed_triplets(g, only=held)
    assert trips and all(tuple(g[t.reference].attributes.values()) in held and
                         tuple(g[t.target].attributes.values()) in held for t in trips)
    with pytest.raises(ValueError, match="appears twice"):
        composed_triplets(g + g[:1])


def test_composed_recall_removes_the_reference():
    gallery = np.eye(4, dtype=np.float32)
    # query 0 is closest to its reference (0), then the target (2); query 1's target is third after removal
    q = np.array([[0.9, 0.0, 0.5, 0.1], [0.0, 0.9, 0.2, 0.5]], np.float32)
    r = composed_recall(q, gallery, references=[0, 1], targets=[2, 2], ks=(1, 2, 3))
    assert r == {"R@1": 50.0, "R@2": 100.0, "R@3": 100.0}
    with pytest.raises(ValueError, match="target equals its reference"):
        composed_recall(q, gallery, references=[0, 1], targets=[0, 2])


def _split_vectors(split):
    names = list(split.images)
    gallery = np.eye(len(names), dtype=np.float32)
    return names, gallery


def test_cirr_metrics_whole_split_and_subset(tmp_path):
    make_cirr(str(tmp_path))
    val = read_cirr(tmp_path, "val")
    names, gallery = _split_vectors(val)
    pos = {n: i for i, n in enumerate(names)}
    q = np.zeros((4, len(names)), np.float32)
    # query 0: target first. query 1: another set's image first, then target (R@1 miss, subset hit).
    # query 2: a member of its own set ranks above the target (subset R@1 miss, R@2 hit). query 3: target first.
    for row, query in enumerate(val.queries):
        q[row, pos[query.reference]] = 1.0
        q[row, pos[query.target]] = 0.5
    q[1, pos["dev-1-5-img0"]] = 0.8
    q[2, pos["dev-1-5-img0"]] = 0.8
    m = cirr_metrics(q, gallery, names, val)
    assert m["R@1"] == 50.0 and m["R@5"] == 100.0
    assert m["Recall_subset@1"] == 75.0 and m["Recall_subset@2"] == 100.0
    assert m["R@5+Rs@1"] == pytest.approx((100.0 + 75.0) / 2)


def test_cirr_test_split_gives_submission_files(tmp_path):
    make_cirr(str(tmp_path))
    test = read_cirr(tmp_path, "test1")
    names, gallery = _split_vectors(test)
    q = np.random.default_rng(0).standard_normal((4, len(names))).astype(np.float32)
    sub = cirr_submission(q, gallery, names, test)
    assert sub["recall"]["version"] == "rc2" and sub["recall"]["metric"] == "recall"
    assert sub["recall_subset"]["metric"] == "recall_subset"
    for query in test.queries:
        top = sub["recall"][str(query.pairid)]
        assert len(top) == len(names) - 1 and query.reference not in top  # top 50 of 11
        subset = sub["recall_subset"][str(query.pairid)]
        assert len(subset) == 3 and set(subset) <= set(query.members) - {query.reference}
    with pytest.raises(ValueError, match="targets are hidden"):
        cirr_metrics(q, gallery, names, test)


def test_fashioniq_metrics_and_average(tmp_path):
    make_fashioniq(str(tmp_path), n=60)
    s = read_fashioniq(tmp_path, "dress")
    names, gallery = _split_vectors(s)
    pos = {n: i for i, n in enumerate(names)}
    q = np.zeros((60, 60), np.float32)
    for row, query in enumerate(s.queries):
        # the target ranks row-th: `row` distractors score above it
        for j in range(row):
            q[row, (pos[query.target] + 1 + j) % 60] = 1.0
        q[row, pos[query.target]] = 0.5
    m = fashioniq_metrics(q, gallery, names, s)
    assert m == {"R@10": pytest.approx(10 / 60 * 100), "R@50": pytest.approx(50 / 60 * 100)}
    assert fashioniq_average({"dress": {"R@10": 10.0, "R@50": 40.0}, "shirt": {"R@10": 20.0, "R@50": 50.0},
                              "toptee": {"R@10": 30.0, "R@50": 60.0}}) == {"R@10": 20.0, "R@50": 50.0}


def test_end_to_end_on_fixtures_with_both_methods(tmp_path):
    make_cirr(str(tmp_path / "cirr"))
    make_fashioniq(str(tmp_path / "fiq"))
    enc = create_encoder("tiny-random", device="cpu")
    torch.manual_seed(0)
    net = TextualInversion(config_for(enc, hidden_dim=16)).eval()
    val = read_cirr(tmp_path / "cirr", "val")
    for method, kw in (("arithmetic", {"weight": 0.5}), ("inversion", {"inversion": net})):
        m = evaluate_composed_split(enc, val, kind="cirr", method=method, **kw)
        assert set(m) == {"R@1", "R@5", "R@10", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3", "R@5+Rs@1"}
        assert all(0.0 <= v <= 100.0 for v in m.values())
        f = evaluate_composed_split(enc, read_fashioniq(tmp_path / "fiq", "dress"), kind="fashioniq", method=method, **kw)
        assert set(f) == {"R@10", "R@50"} and f["R@10"] == 100.0  # 6 images: every target is in the top 10
    sub = evaluate_composed_split(enc, read_cirr(tmp_path / "cirr", "test1"), kind="cirr", inversion=net,
                                  method="inversion")
    assert set(sub) == {"recall", "recall_subset"}
