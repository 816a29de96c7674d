"""`mmretrieve optimize INDEX`: re-chooses and tunes the structure of an existing index, stores the
new settings, and reports the structure before and after."""
from __future__ import annotations

import os
import subprocess
import sys

from index_helpers import FP, make_records

from mmretrieve.cli import main
from mmretrieve.index import TuningConfig, UnifiedIndex
from mmretrieve.index.rerank import RERANK_NAME, open_rerank
from mmretrieve.testing.vectors import clustered_unit_vectors


def test_optimize_switches_a_grown_index_and_stores_the_new_target(tmp_path, capsys):
    path = str(tmp_path / "idx")
    ix = UnifiedIndex.create(32, FP, path=path, tuning=TuningConfig(flat_below=2000, queries=50))
    ix.add(clustered_unit_vectors(1500, 32, clusters=30, seed=4), make_records(1500))
    ix.close()
    code = main(["optimize", path, "--target-recall", "0.9", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "before: Flat" in out and "exact while small" in out
    assert "now:    Flat" in out  # still below flat_below: stays exact, re-recorded
    with UnifiedIndex.open(path) as again:
        assert again.tuning.target_recall == 0.9 and again.tuning.flat_below == 2000
        again.add(clustered_unit_vectors(1000, 32, clusters=30, seed=5), make_records(1000, "g"))
        assert not again.plan.exact and again.plan.target == 0.9 and again.plan.recall >= 0.9


def test_optimize_refuses_while_another_writer_holds_the_index(tmp_path):
    path = str(tmp_path / "idx")
    with UnifiedIndex.create(32, FP, path=path):
        proc = subprocess.run([sys.executable, "-m", "mmretrieve", "optimize", path, "--no-progress"],
                              capture_output=True, text=True)
    assert proc.returncode == 2 and f"index {path} is being written by process" in proc.stderr


def test_optimize_rerank_dtype_rewrites_the_rerank_file_in_that_precision(tmp_path, capsys):
    path = str(tmp_path / "idx")
    ix = UnifiedIndex.create(32, FP, path=path, tuning=TuningConfig(flat_below=1000, queries=50))
    base = clustered_unit_vectors(2500, 32, clusters=30, seed=4)
    ids = ix.add(base, make_records(2500))
    assert ix.plan.rerank_dtype == "float16"
    ix.close()
    assert open_rerank(os.path.join(path, RERANK_NAME), dim=32).dtype == "float16"
    assert main(["optimize", path, "--rerank-dtype", "float32", "--no-progress"]) == 0
    assert "float32" in capsys.readouterr().out
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert ro.tuning.rerank_dtype == "float32" and ro.plan.rerank_dtype == "float32"
    table = open_rerank(os.path.join(path, RERANK_NAME), dim=32)
    assert table.dtype == "float32" and (table.data[ids] == base).all()


def test_optimize_exact_below_leaves_exact_search_at_the_new_size_and_stores_it(tmp_path, capsys):
    path = str(tmp_path / "idx")
    ix = UnifiedIndex.create(32, FP, path=path, tuning=TuningConfig(queries=50))
    ix.add(clustered_unit_vectors(1500, 32, clusters=30, seed=4), make_records(1500))
    ix.close()
    assert main(["optimize", path, "--exact-below", "-1", "--no-progress"]) == 2
    assert "--exact-below -1: must be 0 or more entries" in capsys.readouterr().err
    assert main(["optimize", path, "--exact-below", "1000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "before: Flat" in out and "now:    Flat" not in out
    with UnifiedIndex.open(path, readonly=True) as again:
        assert again.tuning.flat_below == 1000 and not again.plan.exact and again.plan.recall >= 0.95
