"""Gather the files of search hits into a folder (copies or symbolic links), best hit first."""
from __future__ import annotations

import filecmp
import os
import shutil
from typing import Iterable, Sequence

from .index import Hit

__all__ = ["hit_paths", "gather_hits", "GATHER_MODES"]

GATHER_MODES = ("copy", "link")


def hit_paths(hits: Iterable[Hit]) -> list[str]:
    """The distinct files of the hits in rank order (a file's windows count once; in-memory entries have none)."""
    return list(dict.fromkeys(h.path for h in hits if h.path is not None))


def gather_hits(hits: Sequence[Hit], directory: str | os.PathLike, mode: str = "copy") -> list[str]:
    """Put each hit's file into ``directory`` as ``NN-name.ext`` (NN = rank); returns the created paths.

    ``mode`` is "copy" or "link" (an absolute symbolic link). A file already there with the same content
    (or link target) is reused; a different one is never overwritten: the new name gets a ``-2``, ``-3`` suffix.
    Indexed files that no longer exist raise FileNotFoundError naming them, before anything is written.
    """
    if mode not in GATHER_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {GATHER_MODES}")
    paths = hit_paths(hits)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"indexed file(s) no longer exist: {', '.join(missing[:5])}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    width = max(2, len(str(len(paths))))
    out = []
    for rank, src in enumerate(paths, 1):
        stem, ext = os.path.splitext(os.path.basename(src))
        for n in range(1, 10_000):
            name = f"{rank:0{width}d}-{stem}{'' if n == 1 else f'-{n}'}{ext}"
            dest = os.path.join(directory, name)
            if not os.path.lexists(dest):
                if mode == "link":
                    os.symlink(src, dest)
                else:
                    shutil.copy2(src, dest)
                break
            if _same(dest, src, mode):
                break
        out.append(dest)
    return out


def _same(dest: str, src: str, mode: str) -> bool:
    if mode == "link":
        return os.path.islink(dest) and os.readlink(dest) == src
    return not os.path.islink(dest) and os.path.isfile(dest) and filecmp.cmp(dest, src, shallow=False)
