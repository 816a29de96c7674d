"""The writer lock of an on-disk index: an exclusive, non-blocking flock on <index>/writer.lock.

flock locks belong to the open file description, so a second writer is refused whether it lives in
another process or in this one; the kernel drops the lock when the holder dies (kill -9 included),
so a stale lock never needs manual cleanup. Readers never take it.
"""
from __future__ import annotations

import errno
import fcntl
import os

from ..errors import IndexLockedError

__all__ = ["WriterLock", "LOCK_NAME"]

LOCK_NAME = "writer.lock"


class WriterLock:
    """Exclusive writer lock held from acquire() until release() (or process exit)."""

    def __init__(self, index_dir: str):
        self.index_dir = index_dir
        self.path = os.path.join(index_dir, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise IndexLockedError(
                    f"index {self.index_dir} is being written by {who}; open it with readonly=True "
                    "to search it, or wait for the writer to finish") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:  # an index dropped without close() must not keep the lock
        try:
            self.release()
        except Exception:
            pass

    @staticmethod
    def is_locked(index_dir: str) -> int | None:
        """PID (or -1 if unknown) of the process holding the lock of index_dir, else None."""
        path = os.path.join(index_dir, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read_pid(fd) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
