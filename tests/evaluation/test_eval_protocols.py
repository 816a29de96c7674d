"""``mmretrieve eval`` on small datasets in the official formats: the report's columns and conventions."""
from __future__ import annotations

import argparse
import json

import pytest
from official_fixtures import make_clotho, make_coco_karpathy, make_msrvtt

from mmretrieve.commands import eval as eval_cmd

COLUMNS = ["direction", "R@1", "R@5", "R@10", "MdR", "MnR", "mAP@10", "queries"]


def _run(argv, capsys) -> tuple[str, dict]:
    p = argparse.ArgumentParser()
    eval_cmd.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["eval", "--preset", "tiny-random", *argv])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    path = argv[argv.index("--json") + 1]
    with open(path, encoding="utf-8") as f:
        return out, json.load(f)


@pytest.mark.parametrize("protocol, make, modality, n_items, n_captions, x2t", [
    ("coco-5k", make_coco_karpathy, "image", 6, 30, "any-caption"),
    ("msrvtt-1k-a", make_msrvtt, "video", 5, 5, "best-caption"),
    ("msrvtt-full-test", make_msrvtt, "video", 5, 20, "best-caption"),
    ("clotho-eval", make_clotho, "audio", 5, 25, "any-caption"),
])
def test_eval_reports_new_columns_and_names_conventions(tmp_path, capsys, protocol, make, modality, n_items,
                                                        n_captions, x2t):
    root = make(tmp_path / "data")
    out, data = _run(["--protocol", protocol, "--data", str(root), "--json", str(tmp_path / "r.json")], capsys)
    lines = out.splitlines()
    assert lines[1].split() == COLUMNS
    assert lines[3].split()[0] == f"text->{modality}" and lines[4].split()[0] == f"{modality}->text"
    assert lines[3].split()[-1] == str(n_captions) and lines[4].split()[-1] == str(n_items)
    assert "ties: item-order:" in out and "median: floor:" in out and f"x2t ({modality}): {x2t}:" in out
    res = data["results"][modality]
    assert res["t2x"]["queries"] == n_captions and res["x2t"]["queries"] == n_items
    assert 0.0 <= res["x2t"]["mAP@10"] <= 100.0
    assert data["conventions"][modality]["x2t"].startswith(x2t)


def test_eval_conventions_are_options(tmp_path, capsys):
    root = make_clotho(tmp_path / "clotho")
    out, data = _run(["--protocol", "clotho-eval", "--data", str(root), "--ties", "pessimistic",
                      "--median", "midpoint", "--max-words", "8", "--json", str(tmp_path / "r.json")], capsys)
    assert "ties: pessimistic:" in out and "median: midpoint:" in out and "cut to 8 tokens" in out
    assert data["conventions"]["audio"]["median"].startswith("midpoint") and data["max_words"] == 8
