"""``mmretrieve eval --protocol cirr|fashioniq``: composed retrieval on fixtures in the official formats."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from mmretrieve.commands import eval as eval_cmd
from mmretrieve.data.cirr import read_cirr
from mmretrieve.data.common import DatasetError
from mmretrieve.data.fashioniq import read_fashioniq
from mmretrieve.evaluation.composed import evaluate_composed_split, fashioniq_average
from mmretrieve.models import create_encoder
from mmretrieve.models.inversion import TextualInversion, config_for
from mmretrieve.testing.composed import make_cirr, make_fashioniq

CIRR_COLUMNS = ["R@1", "R@5", "R@10", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3", "R@5+Rs@1"]


def _run(argv, capsys) -> str:
    p = argparse.ArgumentParser()
    eval_cmd.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["eval", "--preset", "tiny-random", *argv])
    assert args.run(args) == 0
    return capsys.readouterr().out


def _json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def enc():
    return create_encoder("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def network(enc, tmp_path_factory):
    torch.manual_seed(0)
    return TextualInversion(config_for(enc, hidden_dim=16)).eval().save(
        tmp_path_factory.mktemp("net") / "inv.safetensors")


def test_cirr_val_reports_recall_and_recall_subset(tmp_path, capsys, enc):
    make_cirr(str(tmp_path / "cirr"))
    out = _run(["--protocol", "cirr", "--data", str(tmp_path / "cirr"), "--weight", "0.3",
                "--json", str(tmp_path / "r.json")], capsys)
    want = evaluate_composed_split(enc, read_cirr(tmp_path / "cirr", "val"), kind="cirr", weight=0.3)
    got = _json(tmp_path / "r.json")
    assert got["results"] == {"cirr": {"val": want}}
    assert (got["method"], got["weight"], got["inversion"]) == ("arithmetic", 0.3, None)
    lines = out.splitlines()
    assert lines[0] == "cirr: tiny-random (arithmetic, w=0.3)"
    assert lines[1].split() == CIRR_COLUMNS
    assert lines[2].split() == ["val"] + [f"{want[c]:.1f}" for c in CIRR_COLUMNS]


def test_cirr_val_with_an_inversion_network(tmp_path, capsys, enc, network):
    make_cirr(str(tmp_path / "cirr"))
    _run(["--protocol", "cirr", "--data", str(tmp_path / "cirr"), "--method", "inversion", "--inversion", network,
          "--template", "{text} a *", "--json", str(tmp_path / "r.json")], capsys)
    net = TextualInversion.load(network)
    want = evaluate_composed_split(enc, read_cirr(tmp_path / "cirr", "val"), kind="cirr", method="inversion",
                                   inversion=net, template="{text} a *")
    got = _json(tmp_path / "r.json")
    assert got["results"] == {"cirr": {"val": want}} and got["inversion"] == network and got["weight"] is None


def test_cirr_test1_writes_the_two_submission_files(tmp_path, capsys):
    made = make_cirr(str(tmp_path / "cirr"))
    out = _run(["--protocol", "cirr", "--split", "test1", "--data", str(tmp_path / "cirr"), "--submission",
                str(tmp_path / "sub"), "--submission-name", "run1"], capsys)
    assert sorted(os.listdir(tmp_path / "sub")) == ["recall_submission_run1.json", "recall_subset_submission_run1.json"]
    recall = _json(tmp_path / "sub" / "recall_submission_run1.json")
    subset = _json(tmp_path / "sub" / "recall_subset_submission_run1.json")
    pairids = sorted(str(row["pairid"]) for row in made["test1"][1])
    assert (recall["version"], recall["metric"], subset["metric"]) == ("rc2", "recall", "recall_subset")
    assert sorted(k for k in recall if k not in ("version", "metric")) == pairids
    for pid in pairids:
        row = next(r for r in made["test1"][1] if str(r["pairid"]) == pid)
        assert len(recall[pid]) == 11 and row["reference"] not in recall[pid]  # 12 images, reference removed
        assert len(subset[pid]) == 3 and set(subset[pid]) <= set(row["img_set"]["members"]) - {row["reference"]}
    assert f"test1: {len(pairids)} queries" in out


def test_cirr_test1_without_a_submission_folder_is_refused(tmp_path):
    make_cirr(str(tmp_path / "cirr"))
    p = argparse.ArgumentParser()
    eval_cmd.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["eval", "--preset", "tiny-random", "--protocol", "cirr", "--split", "test1",
                         "--data", str(tmp_path / "cirr")])
    with pytest.raises(ValueError, match="pass --submission DIR"):
        args.run(args)


def test_fashioniq_reports_each_category_and_the_average(tmp_path, capsys, enc):
    for cat in ("dress", "shirt", "toptee"):
        make_fashioniq(str(tmp_path / "fiq"), cat, n=14)
    out = _run(["--protocol", "fashioniq", "--data", str(tmp_path / "fiq"), "--json", str(tmp_path / "r.json")],
               capsys)
    want = {c: evaluate_composed_split(enc, read_fashioniq(tmp_path / "fiq", c), kind="fashioniq")
            for c in ("dress", "shirt", "toptee")}
    want["average"] = fashioniq_average(want)
    assert _json(tmp_path / "r.json")["results"] == {"fashioniq": want}
    lines = out.splitlines()
    assert lines[1].split() == ["R@10", "R@50"]
    assert [ln.split()[0] for ln in lines[2:6]] == ["dress", "shirt", "toptee", "average"]


def test_fashioniq_missing_category_names_its_file(tmp_path, capsys):
    make_fashioniq(str(tmp_path / "fiq"), "dress")
    with pytest.raises(DatasetError, match="cap.shirt.val.json"):
        _run(["--protocol", "fashioniq", "--data", str(tmp_path / "fiq")], capsys)
    out = _run(["--protocol", "fashioniq", "--data", str(tmp_path / "fiq"), "--categories", "dress"], capsys)
    assert [ln.split()[0] for ln in out.splitlines()[2:4]] == ["dress", "average"]


def test_method_flags_outside_composed_protocols_are_refused(tmp_path):
    p = argparse.ArgumentParser()
    eval_cmd.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["eval", "--preset", "tiny-random", "--protocol", "coco-5k", "--method", "inversion"])
    with pytest.raises(ValueError, match="--method inversion: for the composed protocols"):
        args.run(args)
