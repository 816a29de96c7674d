"""Writer lock and readers in other processes (subprocesses), and threads sharing one index."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.errors import IndexLockedError
from mmretrieve.index import TuningConfig, UnifiedIndex

_PRELUDE = textwrap.dedent("""
    import sys, numpy as np
    from mmretrieve.index import Record, UnifiedIndex
    def vecs(n, seed):
        v = np.random.default_rng(seed).standard_normal((n, %d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    path = sys.argv[1]
""" % DIM)


def _spawn(body: str, path: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(body), path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _expect(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline().strip()
    if line != word:
        proc.kill()
        raise AssertionError(f"child said {line!r}, expected {word!r}; stderr: {proc.stderr.read()}")


# "approximate": auto past its exact size (20 entries), so readers and writers run on a tuned approximate
# structure with its re-rank file, and writes that grow the index re-choose it
TUNINGS = {"exact": TuningConfig(), "approximate": TuningConfig(flat_below=20, queries=10)}


@pytest.fixture(params=sorted(TUNINGS))
def on_disk(tmp_path, request):
    path = str(tmp_path / "idx")
    with UnifiedIndex.create(DIM, FP, path=path, tuning=TUNINGS[request.param]) as ix:
        ix.add(unit_vectors(50), make_records(50))
        assert ix.structure()["exact"] == (request.param == "exact")
    return path


def test_second_writer_refused_readers_allowed(on_disk):
    child = _spawn("""
        ix = UnifiedIndex.open(path)
        print("locked", flush=True)
        sys.stdin.readline()
        ix.add(vecs(5, 1), [Record(f"/w{i}", "image") for i in range(5)])
        ix.close()
        print("done", flush=True)
    """, on_disk)
    try:
        _expect(child, "locked")
        with pytest.raises(IndexLockedError, match=f"being written by process {child.pid}"):
            UnifiedIndex.open(on_disk)
        with UnifiedIndex.open(on_disk, readonly=True) as ro:  # no lock taken, no waiting
            assert len(ro) == 50 and len(ro.search(unit_vectors(1), k=5)[0]) == 5
            child.stdin.write("go\n")
            child.stdin.flush()
            _expect(child, "done")
            assert len(ro) == 55  # the same reader sees the committed rows
            assert ro.search(unit_vectors(5, seed=1)[2], k=1)[0][0].path == "/w2"
    finally:
        child.kill()
        child.wait()
    with UnifiedIndex.open(on_disk) as ix:  # lock released when the writer ended
        assert len(ix) == 55


def test_lock_of_killed_writer_is_released(on_disk):
    child = _spawn("""
        ix = UnifiedIndex.open(path)
        print("locked", flush=True)
        sys.stdin.readline()
    """, on_disk)
    _expect(child, "locked")
    with pytest.raises(IndexLockedError):
        UnifiedIndex.open(on_disk)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with UnifiedIndex.open(on_disk) as ix:
        assert len(ix) == 50


def test_reader_never_sees_uncommitted_batch(on_disk):
    child = _spawn("""
        ix = UnifiedIndex.open(path)
        with ix.batch():
            ix.add(vecs(30, 2), [Record(f"/b{i}", "video") for i in range(30)])
            ix.remove_path("/media/f0.bin")
            print("inside", flush=True)
            sys.stdin.readline()
        print("committed", flush=True)
        sys.stdin.readline()
        ix.close()
    """, on_disk)
    try:
        _expect(child, "inside")
        with UnifiedIndex.open(on_disk, readonly=True) as ro:
            assert len(ro) == 50 and ro.count("video") == 13
            assert "/media/f0.bin" in ro.paths()
            assert all(not h.path.startswith("/b") for h in ro.search(unit_vectors(30, seed=2), k=3)[0])
            child.stdin.write("go\n")
            child.stdin.flush()
            _expect(child, "committed")
            assert len(ro) == 79 and "/media/f0.bin" not in ro.paths()
            hits = ro.search(unit_vectors(30, seed=2), k=1)
            assert [h[0].path for h in hits] == [f"/b{i}" for i in range(30)]
    finally:
        child.stdin.write("end\n")
        child.stdin.flush()
        child.wait(timeout=30)


def test_readers_see_whole_batches_while_writer_adds(on_disk):
    child = _spawn("""
        ix = UnifiedIndex.open(path)
        print("start", flush=True)
        for b in range(40):
            ix.add(vecs(10, 100 + b), [Record(f"/c{b}-{i}", "audio", metadata={"b": b}) for i in range(10)])
        ix.close()
        print("done", flush=True)
    """, on_disk)
    _expect(child, "start")
    seen = []
    with UnifiedIndex.open(on_disk, readonly=True) as ro:
        q = unit_vectors(1, seed=7)
        deadline = time.time() + 30
        while child.poll() is None and time.time() < deadline:
            seen.append(len(ro.search(q, k=10_000)[0]))
        child.wait(timeout=30)
        assert len(ro.search(q, k=10_000)[0]) == 450
    assert child.returncode == 0, child.stderr.read()
    # every state the reader saw is whole batches (50 rows + 10 per batch), in commit order
    assert all(50 <= n <= 450 and (n - 50) % 10 == 0 for n in seen), f"reader saw a partial batch: {sorted(set(seen))}"
    assert seen == sorted(seen), "the reader saw the index go back to an older state"
    assert any(50 < n < 450 for n in seen), f"the reader never overlapped the writer: {sorted(set(seen))}"


def test_kill_during_batches_loses_at_most_the_open_batch(on_disk):
    child = _spawn("""
        ix = UnifiedIndex.open(path)
        for b in range(10_000):
            with ix.batch():
                ix.add(vecs(20, b), [Record(f"/k{b}-{i}", "image") for i in range(20)])
            if b == 5:
                print("going", flush=True)
    """, on_disk)
    _expect(child, "going")
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with UnifiedIndex.open(on_disk) as ix:
        n = len(ix)
        assert n >= 50 + 6 * 20 and (n - 50) % 20 == 0
        assert len(ix.search(unit_vectors(1), k=n + 5)[0]) == n
    conn = sqlite3.connect(os.path.join(on_disk, "meta.sqlite"))
    try:
        items = conn.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM items").fetchone()
        orphans = conn.execute("SELECT COUNT(*) FROM vectors WHERE id NOT IN (SELECT id FROM items)").fetchone()
        assert items == (n, n) and orphans == (0,)
    finally:
        conn.close()


def test_index_dropped_without_close_releases_lock(on_disk):
    import gc
    ix = UnifiedIndex.open(on_disk)
    ix.add(unit_vectors(1, seed=3), make_records(1, "dropped"))
    del ix
    gc.collect()
    with UnifiedIndex.open(on_disk) as again:
        assert len(again) == 51


def test_threads_search_while_save_checkpoints(tmp_path):
    """save() checkpoints the WAL on the connection the searching threads share: it must wait for
    them (a checkpoint inside a thread's read snapshot broke that snapshot's COMMIT)."""
    ix = UnifiedIndex.create(DIM, FP, path=str(tmp_path / "idx"))
    ix.add(unit_vectors(300), make_records(300))
    errors: list[str] = []
    stop = threading.Event()
    q = unit_vectors(4, seed=3)

    def reader() -> None:
        while not stop.is_set():
            try:
                hits = ix.search(q, k=5)
                assert [len(h) for h in hits] == [5, 5, 5, 5]
                len(ix)
            except Exception as exc:  # noqa: BLE001 - any failure in a reader is the defect
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for r in range(60):
            ix.add(unit_vectors(20, seed=100 + r), make_records(20, f"r{r}_"))
            ix.save()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(ix) == 300 + 60 * 20
    ix.close()
