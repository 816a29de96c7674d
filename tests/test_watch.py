"""Folders kept in sync: bursts batched, renames and deletions (only with prune), crash and restart."""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mmretrieve as mmr
from mmretrieve.index import UnifiedIndex
from mmretrieve.media.write import write_image
from mmretrieve.watch import FolderWatcher, WatchConfig, apply_changes, sync_folders

pytest.importorskip("watchdog")


def _image(path, seed):
    rng = np.random.default_rng(seed)
    return os.path.realpath(write_image(str(path), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))


def _wait(condition, seconds=30.0, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class _Running:
    """A FolderWatcher in a thread, recording each batch report."""

    def __init__(self, retriever, root, config):
        self.reports = []
        self.stop = threading.Event()
        self.watcher = FolderWatcher(retriever, [str(root)], config, on_batch=self.reports.append)
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        _wait(lambda: len(self.reports) >= 1, what="the first full pass")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(20)


def _indexed(r):
    return sorted(p for p in r.index.paths() if p is not None)


def test_a_burst_is_one_batch_and_deletions_are_kept_without_prune(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    first = _image(root / "a.png", 0)
    with mmr.Retriever.create("tiny-random", num_workers=0) as r, \
            _Running(r, root, WatchConfig(quiet=0.6, max_delay=5.0)) as w:
        assert w.reports[0].added.added == (first,)
        burst = [_image(root / f"b{i}.png", i + 1) for i in range(3)]
        (root / "notes.txt").write_text("not media")
        _wait(lambda: len(w.reports) >= 2, what="the burst's batch")
        time.sleep(1.5)
        assert len(w.reports) == 2 and sorted(w.reports[1].added.added) == sorted(burst)
        os.remove(burst[0])
        os.rename(burst[1], root / "renamed.png")
        _wait(lambda: len(w.reports) >= 3, what="the rename's batch")
        assert w.reports[2].removed == () and w.reports[2].added.added == (os.path.realpath(root / "renamed.png"),)
        # without prune nothing is removed: the deleted file and the rename's old name stay indexed
        assert _indexed(r) == sorted([first, *burst, os.path.realpath(root / "renamed.png")])


def test_prune_follows_deletions_renames_changes_and_new_folders(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    a, b = _image(root / "a.png", 0), _image(root / "b.png", 1)
    outside = tmp_path / "incoming"
    outside.mkdir()
    _image(outside / "c.png", 2)
    with mmr.Retriever.create("tiny-random", num_workers=0) as r, \
            _Running(r, root, WatchConfig(quiet=0.6, max_delay=5.0, prune=True)) as w:
        assert sorted(w.reports[0].added.added) == [a, b]
        os.remove(a)
        os.rename(b, root / "b2.png")
        shutil.move(str(outside), str(root / "incoming"))  # a folder moved in
        _image(root / "b2.png", 9)  # and the renamed file changed again
        expected = sorted(os.path.realpath(p) for p in (root / "b2.png", root / "incoming" / "c.png"))
        _wait(lambda: _indexed(r) == expected, what="the index to match the folder")
        removed = {p for rep in w.reports for p in rep.removed}
        assert removed == {a, b}


def test_apply_changes_skips_the_index_own_files_and_non_media(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    img = _image(root / "x.png", 0)
    with mmr.Retriever.create("tiny-random", path=str(root / "idx.mmr"), num_workers=0) as r:
        sync_folders(r, [str(root)])
        gen = r.index.generation
        own = [os.path.join(r.index.path, n) for n in os.listdir(r.index.path)]
        report = apply_changes(r, own + [str(root / "gone.png"), img], [str(root)], WatchConfig())
        assert report.added.ids == () and report.added.unchanged == (img,) and report.removed == ()
        assert r.index.generation == gen  # nothing written, nothing saved: no feedback loop


def _index_paths(index):
    try:
        with UnifiedIndex.open(index, readonly=True) as ix:
            return sorted(p for p in ix.paths() if p is not None)
    except Exception:  # not created yet
        return None


def test_watch_command_survives_a_kill_and_catches_up_on_restart(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    files = [_image(root / f"i{i}.png", i) for i in range(3)]
    index = str(tmp_path / "w.mmr")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "mmretrieve", "index", str(root), "--index", index, "--preset", "tiny-random",
           "--workers", "0", "--no-progress", "--watch", "--prune", "--quiet-period", "0.5"]

    def start():
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

    proc = start()
    try:
        _wait(lambda: _index_paths(index) == sorted(files), 120, "the first pass")
        new = _image(root / "new.png", 7)
        _wait(lambda: _index_paths(index) == sorted(files + [new]), 60, "the watched addition")
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
        # while it is down: one file deleted, one added
        os.remove(files[0])
        later = _image(root / "later.png", 8)
        proc = start()
        _wait(lambda: _index_paths(index) == sorted(files[1:] + [new, later]), 120, "the restart to catch up")
    finally:
        proc.kill()
        proc.wait(20)
    with mmr.Retriever.load(index, readonly=True) as r:
        assert r.search(pathlib.Path(later), k=1)[0].path == later


def test_prune_without_watch_removes_vanished_files_once(tmp_path, capsys):
    from mmretrieve.cli import main

    root = tmp_path / "m"
    root.mkdir()
    a, b = _image(root / "a.png", 0), _image(root / "b.png", 1)
    index = str(tmp_path / "p.mmr")
    base = ["index", str(root), "--index", index, "--preset", "tiny-random", "--workers", "0", "--no-progress"]
    assert main(base) == 0
    os.remove(a)
    assert main(base) == 0  # without --prune the entry stays
    assert _index_paths(index) == [a, b]
    capsys.readouterr()
    assert main(base + ["--prune"]) == 0
    assert "pruned 1 vanished file(s)" in capsys.readouterr().out
    assert _index_paths(index) == [b]
