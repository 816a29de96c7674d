"""Helpers of the reliability tests: CLI subprocesses, small generated folders, and direct SQLite
reads of an index for invariant checks (independent of UnifiedIndex)."""
from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys

import numpy as np

from mmretrieve.media.write import write_audio, write_image


def connect_ro(index_dir: str) -> sqlite3.Connection:
    uri = pathlib.Path(os.path.join(index_dir, "meta.sqlite")).as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def invariants(index_dir: str) -> dict:
    """Counts that must hold after any crash: no orphans either way, no duplicated (path, window)."""
    conn = connect_ro(index_dir)
    try:
        conn.execute("BEGIN")
        out = {
            "rows": conn.execute("SELECT COUNT(*) FROM items").fetchone()[0],
            "vectors": conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0],
            "orphan_items": conn.execute(
                "SELECT COUNT(*) FROM items i LEFT JOIN vectors v ON v.id = i.id WHERE v.id IS NULL").fetchone()[0],
            "orphan_vectors": conn.execute(
                "SELECT COUNT(*) FROM vectors v LEFT JOIN items i ON i.id = v.id WHERE i.id IS NULL").fetchone()[0],
            "duplicates": conn.execute(
                "SELECT COUNT(*) FROM (SELECT path, seg_start, seg_end, COUNT(*) c FROM items "
                "GROUP BY path, seg_start, seg_end HAVING c > 1)").fetchone()[0],
            "paths": conn.execute("SELECT COUNT(DISTINCT path) FROM items").fetchone()[0],
        }
        conn.execute("COMMIT")
        return out
    finally:
        conn.close()


def vectors_by_path(index_dir: str) -> dict[tuple, np.ndarray]:
    """(path, start, end) -> stored float32 vector."""
    conn = connect_ro(index_dir)
    try:
        rows = conn.execute("SELECT i.path, i.seg_start, i.seg_end, v.vector FROM items i JOIN vectors v ON v.id = i.id")
        return {(p, s, e): np.frombuffer(b, "<f4").copy() for p, s, e, b in rows}
    finally:
        conn.close()


def row_count(index_dir: str) -> int:
    """Committed rows, or -1 while the index does not exist yet."""
    if not os.path.isfile(os.path.join(index_dir, "manifest.json")):
        return -1
    try:
        conn = connect_ro(index_dir)
        try:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


TINY = "tiny-random"


def cli(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m mmretrieve ARGS`` to completion; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "mmretrieve", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def cli_popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmretrieve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def make_image_folder(root: str, n: int, *, seed: int = 0, size: int = 16) -> list[str]:
    """n tiny PNGs of random noise (distinct contents) in root; returns their real paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = []
    for i in range(n):
        out.append(os.path.realpath(write_image(os.path.join(root, f"img{i:04d}.png"),
                                                rng.integers(0, 256, (size, size, 3), dtype=np.uint8))))
    return out


def make_audio_folder(root: str, n: int, *, seconds: float = 25.0, seed: int = 0) -> list[str]:
    """n noisy tones of ``seconds`` (3 windows of 10 s at the tiny preset) in root."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * 16000)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        out.append(os.path.realpath(write_audio(os.path.join(root, f"tone{i:03d}.wav"), tone, 16000)))
    return out
