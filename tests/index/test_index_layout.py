"""The on-disk layout: manifest checks, recovery of a save interrupted between its renames, and the
clean-up of leftovers (only those of processes that are gone)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.errors import IndexCorruptError
from mmretrieve.index import UnifiedIndex


@pytest.fixture
def saved(tmp_path):
    path = str(tmp_path / "ix")
    ix = UnifiedIndex.create(DIM, FP, path=path)
    ix.add(unit_vectors(6), make_records(6))
    ix.close()
    return path


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def _edit_manifest(path: str, change) -> None:
    manifest = os.path.join(path, "manifest.json")
    with open(manifest) as f:
        body = json.load(f)
    with open(manifest, "w") as f:
        f.write(change(body))


@pytest.mark.parametrize("change,message", [
    (lambda b: "{not json", "manifest.json: not valid JSON"),
    (lambda b: json.dumps({**b, "format": "something-else"}), "manifest.json: not an mmretrieve index manifest"),
    (lambda b: json.dumps({**b, "format_version": 2}), "manifest.json: format version 2, this mmretrieve reads 1"),
    (lambda b: json.dumps({**b, "dim": "sixteen"}), "dim/factory/fingerprint missing or of the wrong type"),
    (lambda b: json.dumps({**b, "dim": True}), "dim/factory/fingerprint missing or of the wrong type"),
    (lambda b: json.dumps({**b, "dim": DIM + 1}), "manifest.json: disagrees with meta.sqlite"),
])
def test_a_bad_manifest_is_named(saved, change, message):
    _edit_manifest(saved, change)
    for readonly in (True, False):
        with pytest.raises(IndexCorruptError, match=message):
            UnifiedIndex.open(saved, readonly=readonly)


def test_open_of_a_missing_folder_is_named(tmp_path):
    with pytest.raises(IndexCorruptError, match="no index directory here"):
        UnifiedIndex.open(str(tmp_path / "nothing"), readonly=True)


@pytest.mark.parametrize("left_at_target", [None, "empty dir"])
def test_a_save_interrupted_between_its_renames_is_recovered(saved, left_at_target):
    aside = f"{saved}.old-{_dead_pid()}-0000abcd"
    os.rename(saved, aside)
    if left_at_target == "empty dir":
        os.mkdir(saved)
    with UnifiedIndex.open(saved, readonly=True) as ro:  # a reader reads the copy where it is
        assert len(ro) == 6
    assert os.path.isdir(aside)
    with UnifiedIndex.open(saved) as ix:  # a writer moves it back
        assert len(ix) == 6
    assert not os.path.exists(aside) and os.path.isfile(os.path.join(saved, "manifest.json"))


def test_recovery_never_replaces_something_else_at_the_target(saved):
    aside = f"{saved}.old-{_dead_pid()}-0000abcd"
    os.rename(saved, aside)
    with open(saved, "w") as f:
        f.write("someone's file")
    with pytest.raises(IndexCorruptError, match="ix: no index directory here"):
        UnifiedIndex.open(saved)
    with open(saved) as f:
        assert f.read() == "someone's file"
    assert os.path.isfile(os.path.join(aside, "manifest.json"))


def test_leftovers_of_dead_processes_are_removed_those_of_live_ones_kept(saved):
    dead = f"{saved}.tmp-{_dead_pid()}-00000001"
    odd = f"{saved}.tmp-notapid-00000002"
    live = f"{saved}.tmp-{os.getppid()}-00000003"  # the parent process is alive: maybe still saving
    for d in (dead, odd, live):
        shutil.copytree(saved, d)
    with UnifiedIndex.open(saved) as ix:
        assert len(ix) == 6
    assert not os.path.exists(dead) and not os.path.exists(odd) and os.path.isdir(live)
    shutil.rmtree(live)


def test_writer_open_removes_cache_temp_files_of_dead_writers_only(saved):
    dead = os.path.join(saved, f"rerank.vec.tmp-{_dead_pid()}")
    live = os.path.join(saved, f"vectors.faiss.tmp-{os.getppid()}")  # a live process's write in flight
    for p in (dead, live):
        with open(p, "wb") as f:
            f.write(b"partial")
    with UnifiedIndex.open(saved, readonly=True):
        assert os.path.exists(dead)  # readers never write
    with UnifiedIndex.open(saved):
        assert not os.path.exists(dead) and os.path.exists(live)
