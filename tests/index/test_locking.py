"""WriterLock on its own: the holder it names, an unknown holder, and errors that are not contention."""
from __future__ import annotations

import errno
import fcntl
import os

import pytest

from mmretrieve.errors import IndexLockedError
from mmretrieve.index import locking
from mmretrieve.index.locking import LOCK_NAME, WriterLock


def test_the_lock_file_names_its_holder_until_release(tmp_path):
    lock = WriterLock(str(tmp_path))
    lock.acquire()
    with open(tmp_path / LOCK_NAME) as f:
        assert f.read() == f"{os.getpid()}\n"
    other = WriterLock(str(tmp_path))
    with pytest.raises(IndexLockedError, match=rf"^index {tmp_path} is being written by process {os.getpid()}; "
                                               "open it with readonly=True"):
        other.acquire()
    assert not other.held
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # emptied: no stale pid for the next reader
    other.acquire()
    assert other.held and WriterLock.is_locked(str(tmp_path)) == os.getpid()
    other.release()


def test_a_holder_that_wrote_no_pid_is_another_process(tmp_path):
    lock = WriterLock(str(tmp_path))
    lock.acquire()
    os.truncate(tmp_path / LOCK_NAME, 0)  # e.g. killed between flock and writing its pid
    with pytest.raises(IndexLockedError, match="is being written by another process;"):
        WriterLock(str(tmp_path)).acquire()
    assert WriterLock.is_locked(str(tmp_path)) == -1
    (tmp_path / LOCK_NAME).write_text("not-a-pid\n")
    assert WriterLock.is_locked(str(tmp_path)) == -1
    lock.release()
    assert WriterLock.is_locked(str(tmp_path)) is None


def test_a_flock_failure_that_is_not_contention_propagates(tmp_path, monkeypatch):
    """ENOLCK (no lock table, e.g. some network filesystems) is not "another writer": the OSError is
    raised as it is, the file descriptor is closed and the lock is not held."""
    opened = []
    real_open = os.open

    def tracking_open(*args, **kwargs):
        fd = real_open(*args, **kwargs)
        opened.append(fd)
        return fd

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.os, "open", tracking_open)
    monkeypatch.setattr(locking.fcntl, "flock", no_locks)
    lock = WriterLock(str(tmp_path))
    with pytest.raises(OSError) as info:
        lock.acquire()
    assert type(info.value) is OSError and info.value.errno == errno.ENOLCK
    assert not lock.held
    assert len(opened) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(opened[0])


@pytest.mark.parametrize("code", [errno.EWOULDBLOCK, errno.EACCES])
def test_every_contention_errno_is_reported_as_locked(tmp_path, monkeypatch, code):
    def busy(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(locking.fcntl, "flock", busy)
    with pytest.raises(IndexLockedError, match="is being written by another process"):
        WriterLock(str(tmp_path)).acquire()


def test_is_locked_is_none_for_a_free_lock_file(tmp_path):
    (tmp_path / LOCK_NAME).write_text("12345\n")  # left by a holder that died: the kernel freed the lock
    assert WriterLock.is_locked(str(tmp_path)) is None
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert WriterLock.is_locked(str(tmp_path)) == 12345
    finally:
        os.close(fd)
