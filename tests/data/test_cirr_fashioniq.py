"""CIRR and FashionIQ readers on fixtures written in the official file formats."""
from __future__ import annotations

import json
import os

import pytest

from mmretrieve.data.cirr import read_cirr
from mmretrieve.data.common import DatasetError
from mmretrieve.data.fashioniq import join_captions, read_fashioniq
from mmretrieve.testing.composed import make_cirr, make_fashioniq


def test_cirr_val_and_test_splits_read(tmp_path):
    made = make_cirr(str(tmp_path))
    val = read_cirr(tmp_path, "val")
    assert len(val.queries) == 4 and len(val.images) == 12
    q = val.queries[1]
    assert (q.pairid, q.reference, q.target, q.caption) == (1, "dev-0-0-img0", "dev-0-2-img0", "make it blue")
    assert q.members == tuple(made["val"][1][1]["img_set"]["members"])
    assert val.images["dev-1-3-img0"] == os.path.join(str(tmp_path), "dev", "dev-1-3-img0.png")
    test = read_cirr(tmp_path, "test1")
    assert len(test.queries) == 4 and all(q.target is None for q in test.queries)


def test_cirr_missing_image_is_reported_or_skipped(tmp_path):
    make_cirr(str(tmp_path), missing="dev-0-1-img0")
    with pytest.raises(DatasetError, match="dev-0-1-img0.*not found"):
        read_cirr(tmp_path, "val")
    val = read_cirr(tmp_path, "val", skip_missing=True)
    assert [q.pairid for q in val.queries] == [1, 10, 11]  # pairid 0's target is the missing image
    assert len(val.skipped) == 1 and "dev-0-1-img0" in val.skipped[0][0]


def test_cirr_bad_layout_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="cap.rc2.val.json: file not found"):
        read_cirr(tmp_path, "val")
    with pytest.raises(ValueError, match="split='dev' is not a CIRR split"):
        read_cirr(tmp_path, "dev")
    make_cirr(str(tmp_path))
    path = tmp_path / "captions" / "cap.rc2.val.json"
    rows = json.loads(path.read_text())
    del rows[2]["caption"]
    path.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match="row 2: malformed query"):
        read_cirr(tmp_path, "val")


def test_fashioniq_reads_and_joins_both_captions(tmp_path):
    caps = make_fashioniq(str(tmp_path))
    s = read_fashioniq(tmp_path, "dress", "val")
    assert len(s.queries) == 6 and len(s.images) == 6
    q = s.queries[0]
    assert (q.reference, q.target) == (caps[0]["candidate"], caps[0]["target"])
    assert q.text == "is longer and has a red colour"
    assert q.reference_path == os.path.join(str(tmp_path), "images", f"{caps[0]['candidate']}.png")
    assert join_captions(["  is blue?", "shorter. "]) == "is blue and shorter"


def test_fashioniq_errors(tmp_path):
    with pytest.raises(ValueError, match="category='pants'"):
        read_fashioniq(tmp_path, "pants")
    with pytest.raises(DatasetError, match="cap.shirt.val.json: file not found"):
        read_fashioniq(tmp_path, "shirt")
    make_fashioniq(str(tmp_path), "shirt")
    os.remove(tmp_path / "images" / "B00SH0002.png")
    with pytest.raises(DatasetError, match="B00SH0002"):
        read_fashioniq(tmp_path, "shirt")
    s = read_fashioniq(tmp_path, "shirt", skip_missing=True)
    # queries 1 (target 2) and 2 (reference 2) need the missing image
    assert [q.reference for q in s.queries] == ["B00SH0000", "B00SH0003", "B00SH0004", "B00SH0005"]
