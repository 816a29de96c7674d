"""Direct SQLite reads of an index for invariant checks (independent of UnifiedIndex)."""
from __future__ import annotations

import os
import pathlib
import sqlite3

import numpy as np


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
