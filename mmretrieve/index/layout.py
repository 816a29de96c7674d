"""Files of an index directory, atomic writes, and recovery of an interrupted save.

    <index>/manifest.json   format name/version, dim, factory, fingerprint (human-readable copy of
                            the database's meta table; both must agree)
    <index>/meta.sqlite     source of truth (+ -wal/-shm while open)
    <index>/vectors.faiss   derived faiss cache (see vectors.py); may be absent or stale
    <index>/rerank.vec      derived re-rank copy of the vectors by id (see rerank.py); may be absent or stale
    <index>/*.tmp-<pid>     a cache being written (atomic_file); a dead writer's is removed on the next writer open
    <index>/writer.lock     flock target of the single writer

save(other) builds <other>.tmp-<pid>-<rand>/ completely (manifest.json written last, everything
fsynced), then renames it into place; that rename is the commit point. If <other> already exists it
is first renamed to <other>.old-<pid>-<rand>. A crash therefore leaves either the old index in place,
or <other> missing beside an .old-* copy, which recover_interrupted_save() renames back on the next
open (the unfinished save is discarded). Leftover .tmp-* dirs of dead processes are deleted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from typing import Any, BinaryIO, Iterator

from ..errors import IndexCorruptError

__all__ = ["MANIFEST_NAME", "CACHE_NAME", "FORMAT_NAME", "FORMAT_VERSION", "atomic_file", "atomic_write_bytes",
           "fsync_dir", "sibling_name", "TMP_TAG", "OLD_TAG", "write_manifest", "read_manifest", "recover_interrupted_save", "sibling_candidates", "remove_dead_temp_files",
           "leftover_siblings"]

MANIFEST_NAME = "manifest.json"
CACHE_NAME = "vectors.faiss"
FORMAT_NAME = "mmretrieve-index"
FORMAT_VERSION = 1
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """A seekable binary file to write ``path`` through: its content replaces ``path`` (fsynced,
    renamed, directory fsynced) only when the block completes, so readers and crashes see the old
    or the complete new file; on any exception the temporary file is removed and ``path`` untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write_bytes(path: str, chunks: list[bytes | memoryview]) -> None:
    """Write a file so readers and crashes only ever see the old or the complete new content."""
    with atomic_file(path) as f:
        for chunk in chunks:
            f.write(chunk)


_HEADER_SLOT = 4096  # header bytes reserved in a written framed file (JSON padded with spaces)
_MAX_HEADER = 1 << 16


class FramedWriter:
    """The payload side of :func:`framed_file`: bytes written are hashed and counted on the way."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._digest = hashlib.sha256()
        self.nbytes = 0

    def write(self, chunk: bytes | memoryview) -> int:
        self._digest.update(chunk)
        self.nbytes += len(chunk)
        return self._f.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


@contextlib.contextmanager
def framed_file(path: str, magic: bytes, header: dict[str, Any]) -> Iterator[FramedWriter]:
    """Write ``path`` atomically as ``magic``, a header length, a JSON header and a payload streamed
    through the yielded writer. The header slot has a fixed size and is filled once the payload is
    complete: ``header`` plus the payload's ``nbytes`` and ``sha256``."""
    with atomic_file(path) as f:
        f.write(magic)
        f.write(struct.pack("<Q", _HEADER_SLOT))
        f.write(b" " * _HEADER_SLOT)
        writer = FramedWriter(f)
        yield writer
        body = json.dumps({**header, "nbytes": writer.nbytes, "sha256": writer.sha256},
                          sort_keys=True).encode("utf-8")
        if len(body) > _HEADER_SLOT:
            raise ValueError(f"{path}: header of {len(body)} bytes does not fit its {_HEADER_SLOT}-byte slot")
        f.seek(len(magic) + 8)
        f.write(body.ljust(_HEADER_SLOT, b" "))


def read_framed_header(f: BinaryIO, path: str, magic: bytes, what: str, hint: str) -> dict[str, Any]:
    """The JSON header of a file :func:`framed_file` wrote, ``f`` left at the payload's start;
    IndexCorruptError naming ``path`` (``what`` the file is, ``hint`` the way out) for a bad frame."""
    if f.read(len(magic)) != magic:
        raise IndexCorruptError(f"{path}: not an mmretrieve {what} (bad magic); {hint}")
    raw_len = f.read(8)
    if len(raw_len) != 8:
        raise IndexCorruptError(f"{path}: truncated header; {hint}")
    (hlen,) = struct.unpack("<Q", raw_len)
    if hlen > _MAX_HEADER:
        raise IndexCorruptError(f"{path}: header length {hlen} is implausible; {hint}")
    try:
        header = json.loads(f.read(hlen).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IndexCorruptError(f"{path}: header is not valid JSON; {hint}") from None
    if not isinstance(header, dict) or not isinstance(header.get("nbytes"), int):
        raise IndexCorruptError(f"{path}: header lacks nbytes; {hint}")
    return header


def write_manifest(index_dir: str, *, dim: int, factory: str, fingerprint: dict) -> None:
    body = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "dim": int(dim),
            "factory": factory, "fingerprint": fingerprint}
    atomic_write_bytes(os.path.join(index_dir, MANIFEST_NAME),
                       [json.dumps(body, indent=2, sort_keys=True).encode("utf-8")])


def read_manifest(index_dir: str) -> dict[str, Any]:
    path = os.path.join(index_dir, MANIFEST_NAME)
    if not os.path.isdir(index_dir):
        raise IndexCorruptError(f"{index_dir}: no index directory here")
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
        body = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"{path}: missing; {index_dir} is not an mmretrieve index") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        raise IndexCorruptError(f"{path}: not an mmretrieve index manifest")
    if body.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{path}: format version {body.get('format_version')!r}, this mmretrieve reads {FORMAT_VERSION}")
    dim, factory, fp = body.get("dim"), body.get("factory"), body.get("fingerprint")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0 or not isinstance(factory, str) \
            or not isinstance(fp, dict):
        raise IndexCorruptError(f"{path}: dim/factory/fingerprint missing or of the wrong type")
    return body


def sibling_candidates(target: str) -> tuple[list[str], list[str]]:
    """Complete temporary snapshots and renamed-away old copies of target, newest first."""
    parent, name = os.path.split(os.path.abspath(target))
    tmps, olds = [], []
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return [], []
    for entry in entries:
        full = os.path.join(parent, entry)
        if entry.startswith(name + TMP_TAG) and os.path.isfile(os.path.join(full, MANIFEST_NAME)):
            tmps.append(full)
        elif entry.startswith(name + OLD_TAG) and os.path.isfile(os.path.join(full, MANIFEST_NAME)):
            olds.append(full)
    key = lambda p: os.stat(os.path.join(p, MANIFEST_NAME)).st_mtime_ns  # noqa: E731
    return sorted(tmps, key=key, reverse=True), sorted(olds, key=key, reverse=True)


def recover_interrupted_save(target: str, *, write: bool) -> str | None:
    """The directory to load for target: target itself when healthy; the renamed-away old copy when
    a save was interrupted between its two renames (with write=True it is moved back into place and
    leftovers of dead savers are removed); None when there is nothing to recover."""
    if os.path.isfile(os.path.join(target, MANIFEST_NAME)):
        if write:
            _cleanup(target)
        return target
    _, olds = sibling_candidates(target)
    if not olds:
        return None
    if not write:
        return olds[0]
    if os.path.isdir(target) and not os.listdir(target):
        os.rmdir(target)
    if os.path.exists(target):
        return None  # something else lives there; the caller reports it
    os.rename(olds[0], target)
    fsync_dir(os.path.dirname(os.path.abspath(target)) or ".")
    _cleanup(target)
    return target


def sibling_name(target: str, tag: str) -> str:
    """<target>.tmp-<pid>-<random> / <target>.old-<pid>-<random>."""
    return f"{os.path.abspath(target)}{tag}{os.getpid()}-{os.urandom(4).hex()}"


def _owner_alive(entry: str, tag: str) -> bool:
    pid_text = entry.split(tag, 1)[1].split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_siblings(target: str) -> list[str]:
    """.tmp-*/.old-* directories beside target left by saves of processes that are gone, sorted."""
    parent, name = os.path.split(os.path.abspath(target))
    out = []
    for entry in os.listdir(parent or "."):
        for tag in (TMP_TAG, OLD_TAG):
            full = os.path.join(parent, entry)
            if entry.startswith(name + tag) and not _owner_alive(entry[len(name):], tag) and os.path.isdir(full):
                out.append(full)
    return sorted(out)


def remove_dead_temp_files(index_dir: str) -> list[str]:
    """Delete the temporary files (``<name>.tmp-<pid>``, see atomic_file) that writers killed in the
    middle of writing a cache left inside the index directory; returns their paths."""
    removed = []
    try:
        entries = os.listdir(index_dir)
    except OSError:
        return []
    for entry in entries:
        full = os.path.join(index_dir, entry)
        if TMP_TAG in entry and os.path.isfile(full) and not _owner_alive(entry, TMP_TAG):
            with contextlib.suppress(OSError):
                os.unlink(full)
                removed.append(full)
    return removed


def _cleanup(target: str) -> None:
    """Remove leftover .tmp-*/.old-* siblings of a healthy target (their content is superseded),
    except those of a live process that may still be saving."""
    for full in leftover_siblings(target):
        shutil.rmtree(full, ignore_errors=True)
