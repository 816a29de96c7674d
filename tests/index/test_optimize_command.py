"""`mmretrieve optimize INDEX`: re-chooses and tunes the structure of an existing index, stores the
new settings, and reports the structure before and after."""
from __future__ import annotations

import subprocess
import sys

from index_helpers import FP, make_records

from mmretrieve.cli import main
from mmretrieve.index import TuningConfig, UnifiedIndex
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
