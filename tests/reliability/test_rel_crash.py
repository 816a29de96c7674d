"""kill -9 ``mmretrieve index`` at several moments; re-running must finish the job exactly once.

A folder of 300 tiny PNGs is indexed with --batch-size 4 (75 commits). The indexer is killed with
SIGKILL (its whole process group, so decoding workers die too) when the committed row count first
reaches thresholds drawn from a seeded RNG (one before the first commit, some mid-run, one after the
last commit while the index is being saved), each time resuming from what the previous run left. After
every kill the database must hold no orphan and no duplicate row; at the end every file is present
exactly once and every vector equals the one of an uninterrupted run.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rel_helpers import TINY, cli, invariants, row_count, vectors_by_path

from mmretrieve.index import UnifiedIndex

N_FILES = 300
BATCH = "4"


# "approximate": auto leaves exact search at 100 entries, so the runs that are killed also choose, train
# and tune an approximate structure and write its re-rank file, on commits the kills can land in
STRUCTURES = {"exact": [], "approximate": ["--exact-below", "100"]}


def _index_cmd(folder: str, index: str, workers: int, new_index: list[str]) -> list[str]:
    return [sys.executable, "-m", "mmretrieve", "index", folder, "--index", index, "--preset", TINY,
            "--batch-size", BATCH, "--workers", str(workers), "--no-progress",
            *(new_index if not os.path.exists(index) else [])]


def _run_and_kill(folder: str, index: str, threshold: int, workers: int, deadline: float,
                  new_index: list[str]) -> tuple[bool, int]:
    """Start the indexer, SIGKILL it once `threshold` rows are committed; (was it killed mid-run, rows)."""
    proc = subprocess.Popen(_index_cmd(folder, index, workers, new_index), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if row_count(index) >= threshold:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True, row_count(index)
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return True, row_count(index)
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        return False, row_count(index)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_kill9_resume_exactly_once(image_folder_300, tmp_path, structure):
    folder, files = image_folder_300
    seed = int(os.environ.get("MMR_KILL_SEED", "1234"))
    rng = random.Random(seed)
    thresholds = [0, rng.randint(5, 60), rng.randint(90, 170), rng.randint(190, 280), N_FILES]
    deadline = time.monotonic() + 240  # the whole test is bounded
    index = str(tmp_path / "killed")

    killed_mid_run, last_rows, log = 0, 0, []
    for i, threshold in enumerate(thresholds):
        killed, rows = _run_and_kill(folder, index, threshold, workers=2 if i == 2 else 0, deadline=deadline,
                                     new_index=STRUCTURES[structure])
        log.append((threshold, killed, rows))
        if rows >= 0:
            inv = invariants(index)
            assert inv["orphan_items"] == 0 and inv["orphan_vectors"] == 0, (log, inv)
            assert inv["duplicates"] == 0, (log, inv)
            assert inv["rows"] == inv["vectors"] == inv["paths"], (log, inv)
            assert rows >= last_rows, f"committed rows went backwards: {log}"
            last_rows = rows
        killed_mid_run += killed and 0 <= rows < N_FILES
    assert killed_mid_run >= 3, f"the kills did not land mid-run (machine too fast/slow?): {log}"

    done = cli("index", folder, "--index", index, "--batch-size", BATCH, "--workers", "0", "--no-progress", timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    inv = invariants(index)
    assert inv == {"rows": N_FILES, "vectors": N_FILES, "orphan_items": 0, "orphan_vectors": 0,
                   "duplicates": 0, "paths": N_FILES}, (log, inv)

    ref = str(tmp_path / "reference")
    r = cli("index", folder, "--index", ref, "--preset", TINY, "--batch-size", BATCH, "--workers", "0",
            "--no-progress", *STRUCTURES[structure], timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = vectors_by_path(index), vectors_by_path(ref)
    assert sorted(got) == sorted(want) and {k[0] for k in got} == set(files)
    worst = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert all(np.array_equal(got[k], want[k]) for k in want), f"vectors differ from an uninterrupted run by {worst}"
    assert "added 0 file(s)" in done.stdout and f"unchanged {N_FILES}" in done.stdout, done.stdout[-500:]

    # and the resumed index is usable: the faiss cache agrees with SQLite, search finds each file
    from mmretrieve.verify import verify_index

    report = verify_index(index, check_encoder=False)
    assert report.ok, str(report)
    with UnifiedIndex.open(index, readonly=True) as ix:
        plan = ix.structure()
    assert plan["factory"] == "auto" and plan["exact"] == (structure == "exact") and not plan["fallback"], plan
    print(f"kill -9 schedule (threshold, killed, committed rows): {log}; max |dv| = {worst:g}")
