"""Untrusted files: checkpoints and indexes are loaded without unpickling; a tampered or truncated
index file gives a clear error naming it and never executes code; SQL in filter values is data.

Already covered elsewhere (not repeated here): UnifiedIndex.open on a truncated / tampered faiss
cache, a truncated database, '{not json' manifests (tests/index/test_index_persistence.py); SQL in
filter keys and simple SQL values at the UnifiedIndex level (tests/index/test_index_basic.py,
test_index_filters_property.py). These tests go through the public entry points above them:
create_encoder / Retriever / load_checkpoint / the ``mmretrieve`` command.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch
from rel_helpers import TINY

import mmretrieve as mmr
from mmretrieve.cli import main as cli_main
from mmretrieve.errors import IndexCorruptError, MMRError, WeightsUnavailableError
from mmretrieve.models import create_encoder

SQL = "x' OR 1=1; DROP TABLE items; --"
TEXTS = ["a red square", "a blue circle", "a green triangle", "a yellow star"]


# --------------------------------------------------------------------------------------- helpers
class _Armed:
    """Unpickling this runs open(marker, 'w'): the marker file proves that code was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def armed_pickle(path, marker, *, fmt: str = "zip") -> str:
    """A file that creates `marker` when unpickled: torch.save's zip format ("zip"), its legacy
    plain-pickle format ("legacy"), or a bare pickle ("raw")."""
    payload = {"state_dict": {"weight": _Armed(str(marker))}, "state": {}, "param_groups": []}
    if fmt == "raw":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, str(path), _use_new_zipfile_serialization=fmt == "zip")
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``mmretrieve ARGV`` in this process; an exception escaping main() fails the test (= a traceback)."""
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_subprocess(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmretrieve", *argv], capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory) -> str:
    """A small on-disk retriever index (texts with metadata, one of them SQL-looking)."""
    path = str(tmp_path_factory.mktemp("untrusted") / "idx")
    with mmr.Retriever.create(TINY, path=path, num_workers=0) as r:
        for i, text in enumerate(TEXTS):
            r.add(text, modality="text", metadata={"album": "holiday" if i % 2 else "work", "n": i}, progress=False)
        r.add("a grey hexagon", modality="text", metadata={"album": SQL, "n": 99}, progress=False)
        r.save()
    return path


@pytest.fixture
def index_copy(saved_index, tmp_path) -> str:
    dst = str(tmp_path / "idx")
    shutil.copytree(saved_index, dst)
    return dst


def _items_table_rows(index_dir: str) -> int:
    conn = sqlite3.connect(f"file:{os.path.join(index_dir, 'meta.sqlite')}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"items", "vectors", "meta", "state", "removed"} <= tables, tables
        return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        conn.close()


# ------------------------------------------------------------------- (a) weights and checkpoints
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw"])
def test_the_armed_pickle_really_runs_code_when_unpickled(tmp_path, fmt):
    """Control: without weights_only the payload executes, so 'no marker' below means something."""
    marker = tmp_path / "control-marker"
    path = armed_pickle(tmp_path / "control.pt", marker, fmt=fmt)
    if fmt == "raw":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".safetensors"])
def test_pickled_encoder_weights_are_refused(tmp_path, suffix):
    marker = tmp_path / "PWNED"
    path = armed_pickle(tmp_path / f"weights{suffix}", marker)
    with pytest.raises((ValueError, MMRError)) as exc:
        create_encoder(TINY, device="cpu", weights=path)
    assert path in str(exc.value)
    with pytest.raises((ValueError, MMRError)) as exc:
        mmr.Retriever.create(TINY, weights=path)
    assert path in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("suffix,fmt", [(".pt", "zip"), (".bin", "legacy"), (".pth", "raw")])
def test_pickled_clip_checkpoint_is_refused_by_weights_only(tmp_path, suffix, fmt):
    marker = tmp_path / "PWNED"
    path = armed_pickle(tmp_path / f"open_clip_model{suffix}", marker, fmt=fmt)
    with pytest.raises(WeightsUnavailableError) as exc:
        create_encoder(TINY, device="cpu", pretrained=path)
    assert path in str(exc.value) and "never unpickles" in str(exc.value) and "weights_only=False" not in str(exc.value)
    assert not marker.exists()


def test_pickled_checkpoint_in_a_pretrained_directory_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    armed_pickle(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(WeightsUnavailableError, match="open_clip_pytorch_model.bin"):
        create_encoder(TINY, device="cpu", pretrained=str(folder))
    assert not marker.exists()


def test_cli_refuses_pickled_pretrained_weights_cleanly(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = armed_pickle(tmp_path / "evil.pt", marker)
    media = tmp_path / "media"
    media.mkdir()
    code, _, err = run_cli(capsys, "index", str(media), "--index", str(tmp_path / "i"), "--preset", TINY,
                           "--pretrained", path, "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("mmretrieve index: error: ") and path in err.splitlines()[0]
    assert not marker.exists() and not (tmp_path / "i").exists()


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> str:
    """A real training checkpoint of the tiny encoder, written by save_checkpoint."""
    from mmretrieve.train.checkpoint import save_checkpoint
    from mmretrieve.train.loss import LogitScale

    out = str(tmp_path_factory.mktemp("run"))
    enc = create_encoder(TINY, device="cpu")
    scale = LogitScale()
    opt = torch.optim.AdamW(list(enc.parameters()) + list(scale.parameters()), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    extra = {"preset": TINY, "video_head": "mean", "num_frames": 4, "config": {"model": {"pretrained": None}}}
    return save_checkpoint(out, 3, enc, scale, opt, sched, None, extra)


def _resume(path: str):
    """What Trainer.resume_from does: restore live objects from a checkpoint folder."""
    from mmretrieve.train.checkpoint import load_checkpoint
    from mmretrieve.train.loss import LogitScale

    enc = create_encoder(TINY, device="cpu")
    scale = LogitScale()
    opt = torch.optim.AdamW(list(enc.parameters()) + list(scale.parameters()), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return load_checkpoint(path, enc, scale, opt, sched, None)


@pytest.fixture
def checkpoint_copy(checkpoint_dir, tmp_path) -> str:
    dst = str(tmp_path / "step")
    shutil.copytree(checkpoint_dir, dst)
    return dst


def test_untouched_checkpoint_resumes(checkpoint_copy):
    assert _resume(checkpoint_copy).step == 3


def test_pickled_optimizer_state_is_never_unpickled(checkpoint_copy, tmp_path):
    marker = tmp_path / "PWNED"
    armed_pickle(os.path.join(checkpoint_copy, "optimizer.pt"), marker)
    with pytest.raises(ValueError, match="optimizer.pt: .*never unpickles"):
        _resume(checkpoint_copy)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.safetensors"])
def test_pickled_safetensors_in_a_checkpoint_are_refused(checkpoint_copy, tmp_path, name):
    marker = tmp_path / "PWNED"
    armed_pickle(os.path.join(checkpoint_copy, name), marker)
    with pytest.raises(ValueError, match=name):
        _resume(checkpoint_copy)
    assert not marker.exists()


def test_eval_of_a_tampered_checkpoint_fails_cleanly(checkpoint_copy, tmp_path, capsys):
    """`mmretrieve eval --checkpoint`: a pickled model.safetensors, then a state.json whose
    config points `pretrained` at a pickle: clear one-line errors, nothing executed."""
    marker = tmp_path / "PWNED"
    armed_pickle(os.path.join(checkpoint_copy, "model.safetensors"), marker)
    argv = ("eval", "--checkpoint", checkpoint_copy, "--protocol", "synthetic", "--data", str(tmp_path / "data"),
            "--device", "cpu")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "model.safetensors" in err and "Traceback" not in err
    evil = armed_pickle(tmp_path / "evil.bin", marker)
    state_path = os.path.join(checkpoint_copy, "state.json")
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    state["config"]["model"]["pretrained"] = evil
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and evil in err and "Traceback" not in err
    assert not marker.exists()


# ------------------------------------------------------------------------- (b) damaged indexes
def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _edit_manifest(change):
    def apply(index_dir: str) -> None:
        path = os.path.join(index_dir, "manifest.json")
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
        _write(path, json.dumps(change(body)).encode())
    return apply


def _truncate(name: str, fraction: float):
    def apply(index_dir: str) -> None:
        path = os.path.join(index_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        _write(path, data[: int(len(data) * fraction)])
    return apply


def _garble(name: str, start: int, length: int):
    def apply(index_dir: str) -> None:
        path = os.path.join(index_dir, name)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        for i in range(start, min(start + length, len(data))):
            data[i] ^= 0xA5
        _write(path, bytes(data))
    return apply


def _replace_with_pickle(name: str):
    def apply(index_dir: str) -> None:
        armed_pickle(os.path.join(index_dir, name), os.path.join(os.path.dirname(index_dir), "PWNED"), fmt="raw")
    return apply


def _garble_tail(index_dir: str) -> None:
    """One byte of the faiss payload flipped (the header stays intact)."""
    path = os.path.join(index_dir, "vectors.faiss")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-20] ^= 0xFF
    _write(path, bytes(data))


DAMAGE = {
    # manifest.json: not JSON, or JSON of the wrong shape
    "manifest-not-json": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b'{"format": ')),
    "manifest-not-utf8": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b"\xff\xfe{\x00}")),
    "manifest-empty": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b"")),
    "manifest-list": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b"[1, 2, 3]")),
    "manifest-null": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b"null")),
    "manifest-string": ("manifest.json", lambda d: _write(os.path.join(d, "manifest.json"), b'"mmretrieve-index"')),
    "manifest-pickle": ("manifest.json", _replace_with_pickle("manifest.json")),
    "manifest-dim-string": ("manifest.json", _edit_manifest(lambda b: {**b, "dim": "32"})),
    "manifest-dim-bool": ("manifest.json", _edit_manifest(lambda b: {**b, "dim": True})),
    "manifest-dim-other": ("manifest.json", _edit_manifest(lambda b: {**b, "dim": 64})),
    "manifest-fingerprint-list": ("manifest.json", _edit_manifest(lambda b: {**b, "fingerprint": [1]})),
    "manifest-no-factory": ("manifest.json", _edit_manifest(lambda b: {k: v for k, v in b.items() if k != "factory"})),
    "manifest-future-version": ("manifest.json", _edit_manifest(lambda b: {**b, "format_version": 99})),
    "manifest-other-format": ("manifest.json", _edit_manifest(lambda b: {**b, "format": "something-else"})),
    # meta.sqlite: truncated or garbled
    "db-empty": ("meta.sqlite", _truncate("meta.sqlite", 0.0)),
    "db-half": ("meta.sqlite", _truncate("meta.sqlite", 0.5)),
    "db-header-garbled": ("meta.sqlite", _garble("meta.sqlite", 0, 100)),
    "db-schema-page-garbled": ("meta.sqlite", _garble("meta.sqlite", 100, 4000)),
    "db-pickle": ("meta.sqlite", _replace_with_pickle("meta.sqlite")),
    # vectors.faiss (the cache): truncated or garbled
    "cache-half": ("vectors.faiss", _truncate("vectors.faiss", 0.5)),
    "cache-header-garbled": ("vectors.faiss", _garble("vectors.faiss", 12, 40)),
    "cache-payload-garbled": ("vectors.faiss", _garble_tail),
    "cache-pickle": ("vectors.faiss", _replace_with_pickle("vectors.faiss")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_index_gives_a_clear_error_naming_the_file(index_copy, capsys, damage):
    name, apply = DAMAGE[damage]
    apply(index_copy)
    for readonly in (True, False):
        with pytest.raises(IndexCorruptError) as exc:
            mmr.Retriever.load(index_copy, readonly=readonly)
        assert os.path.join(index_copy, name) in str(exc.value)
    for argv in (("info", index_copy), ("search", index_copy, "red"), ("search", index_copy, "red", "--json")):
        code, out, err = run_cli(capsys, *argv)
        assert code != 0 and out == ""
        assert err.startswith(f"mmretrieve {argv[0]}: error: ") and name in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(os.path.dirname(index_copy), "PWNED"))


@pytest.mark.parametrize("damage", ["manifest-list", "db-schema-page-garbled", "cache-payload-garbled"])
def test_damaged_index_through_the_real_command_has_no_traceback(index_copy, damage):
    name, apply = DAMAGE[damage]
    apply(index_copy)
    done = cli_subprocess("search", index_copy, "red", "-k", "2")
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and name in done.stderr, done.stderr[-2000:]


def test_deleted_cache_is_rebuilt_not_an_error(index_copy, capsys):
    os.unlink(os.path.join(index_copy, "vectors.faiss"))
    code, out, _ = run_cli(capsys, "search", index_copy, "a red square", "-k", "1")
    assert code == 0 and "a red square" in out


def _tamper_fingerprint(index_dir: str, change) -> None:
    """Edit the fingerprint consistently in manifest.json AND the database (a deliberate forgery
    that passes the manifest/database agreement check)."""
    mpath = os.path.join(index_dir, "manifest.json")
    with open(mpath, encoding="utf-8") as f:
        body = json.load(f)
    body["fingerprint"] = change(body["fingerprint"])
    _write(mpath, json.dumps(body).encode())
    conn = sqlite3.connect(os.path.join(index_dir, "meta.sqlite"))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps(body["fingerprint"], sort_keys=True),))
    conn.commit()
    conn.close()


def test_forged_fingerprint_naming_a_pickled_weights_file_executes_nothing(index_copy, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = armed_pickle(tmp_path / "evil.pt", marker)
    _tamper_fingerprint(index_copy, lambda fp: {**fp, "weights_path": evil})
    with pytest.raises((ValueError, MMRError), match="evil.pt"):
        mmr.Retriever.load(index_copy, readonly=True)
    code, _, err = run_cli(capsys, "search", index_copy, "red")
    assert code == 2 and evil in err and "Traceback" not in err
    assert not marker.exists()


def test_forged_fingerprint_naming_an_unknown_preset_is_a_clear_error(index_copy, capsys):
    _tamper_fingerprint(index_copy, lambda fp: {**fp, "encoder": {**fp["encoder"], "preset": "../../../etc/passwd"}})
    with pytest.raises(ValueError, match="unknown preset"):
        mmr.Retriever.load(index_copy, readonly=True)
    code, _, err = run_cli(capsys, "info", index_copy)
    assert code == 2 and "unknown preset" in err and "Traceback" not in err


FORGED_SHAPES = {
    "no-encoder": lambda fp: {k: v for k, v in fp.items() if k != "encoder"},
    "encoder-is-a-string": lambda fp: {**fp, "encoder": "tiny-random"},
    "video-sampling-unknown-key": lambda fp: {**fp, "video_sampling": {**fp["video_sampling"], "evil": 1}},
}


@pytest.mark.parametrize("shape", sorted(FORGED_SHAPES))
def test_forged_fingerprint_of_the_wrong_shape_is_a_library_error(index_copy, shape):
    _tamper_fingerprint(index_copy, FORGED_SHAPES[shape])
    with pytest.raises(MMRError, match="idx"):
        mmr.Retriever.load(index_copy, readonly=True)


def _schema_with_invalid_utf8(index_dir: str) -> None:
    """The CREATE TABLE text in sqlite_master made unparseable with non-UTF-8 bytes (same length)."""
    path = os.path.join(index_dir, "meta.sqlite")
    with open(path, "rb") as f:
        data = f.read()
    old = b"content_hash TEXT"
    assert data.count(old) == 1
    _write(path, data.replace(old, b"x)\xff" + b"\xfe" * (len(old) - 3)))


def test_schema_with_invalid_utf8_fails_without_traceback(index_copy, capsys):
    _schema_with_invalid_utf8(index_copy)
    with pytest.raises(IndexCorruptError, match="meta.sqlite"):
        mmr.Retriever.load(index_copy, readonly=True)
    code, out, err = run_cli(capsys, "info", index_copy)
    assert code == 2 and out == "" and "Traceback" not in err


def test_schema_with_invalid_utf8_is_index_corrupt_naming_the_file(index_copy):
    _schema_with_invalid_utf8(index_copy)
    with pytest.raises(IndexCorruptError, match="meta.sqlite"):
        mmr.Retriever.load(index_copy, readonly=True)


# ------------------------------------------------------------------------ (c) SQL in filter values
def test_sql_in_a_filter_value_is_data(index_copy, capsys):
    rows = _items_table_rows(index_copy)
    with mmr.Retriever.load(index_copy) as r:  # a writer: a successful injection could really drop the table
        assert r.search("red", k=10, where={"album": "x' OR 1=1; --"}) == []
        assert r.search("red", k=10, where={"album": SQL.replace("x'", "y'")}) == []
        assert r.search("red", k=10, where={"n": SQL}) == []  # a string never matches a number
        # the stored SQL-looking value matches itself exactly, and only itself
        hits = r.search("red", k=10, where={"album": SQL})
        assert [h.metadata["text"] for h in hits] == ["a grey hexagon"]
        hits = r.search("red", k=10, where={"album": [SQL, "work"]})
        assert sorted(h.metadata["n"] for h in hits) == [0, 2, 99]
        hits = r.search("red", k=10, modality="text", where={"album": "holiday' OR '1'='1"})
        assert hits == []
        assert r.remove(SQL) == 0 and r.remove("' OR 1=1 --") == 0
        assert len(r) == rows
    assert _items_table_rows(index_copy) == rows

    # --json prints JSON Lines: one object per hit, nothing when nothing matches
    code, out, err = run_cli(capsys, "search", index_copy, "red", "--where", f"album={SQL}x", "--json")
    assert code == 0 and out == "", err
    code, out, _ = run_cli(capsys, "search", index_copy, "red", "--where", f"album={SQL}", "--json")
    assert code == 0 and [json.loads(line)["metadata"]["n"] for line in out.splitlines()] == [99]
    code, out, _ = run_cli(capsys, "search", index_copy, "red", "--where", "album') OR 1=1; DROP TABLE items; --=x")
    assert code == 0 and out.strip() == "no results"  # an odd key is just a key nobody has
    code, _, err = run_cli(capsys, "search", index_copy, "red", "--where", 'album" OR 1=1; DROP TABLE items; --=x')
    assert code == 2 and "where key" in err and "Traceback" not in err
    assert _items_table_rows(index_copy) == rows
    with contextlib.closing(sqlite3.connect(os.path.join(index_copy, "meta.sqlite"))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
