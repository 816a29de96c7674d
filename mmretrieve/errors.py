"""Exceptions raised by mmretrieve. Every message names the file or argument and the reason."""
from __future__ import annotations

import os

__all__ = [
    "MMRError",
    "MediaError",
    "UnsupportedMediaError",
    "EncoderMismatchError",
    "WeightsUnavailableError",
    "IndexCorruptError",
    "IndexLockedError",
    "IndexReadOnlyError",
    "ServerError",
    "MissingExtraError",
    "RequestRejectedError",
    "CheckpointMismatchError",
]


class MMRError(Exception):
    """Base class of every error mmretrieve raises on purpose."""


class MediaError(MMRError, ValueError):
    """A media file (or in-memory media) could not be decoded."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        where = self.path if self.path is not None else "<in-memory input>"
        super().__init__(f"{where}: {reason}")


class UnsupportedMediaError(MediaError):
    """The file's type is not one mmretrieve can read."""


class EncoderMismatchError(MMRError):
    """Vectors or queries come from a different encoder than the one that built the index."""


class WeightsUnavailableError(MMRError, RuntimeError):
    """Pretrained weights for a preset could not be found locally nor downloaded."""


class IndexCorruptError(MMRError):
    """An index directory is missing files, truncated or tampered with."""


class IndexLockedError(MMRError):
    """Another process holds the write lock of an index."""


class IndexReadOnlyError(MMRError, PermissionError):
    """A write was attempted on an index opened with readonly=True."""


class ServerError(MMRError):
    """An mmretrieve server answered with an error (``status`` is the HTTP status, ``detail`` its reason)."""

    def __init__(self, url: str, status: int, detail: str):
        self.url = url
        self.status = status
        self.detail = detail
        super().__init__(f"{url}: HTTP {status}: {detail}")


class RequestRejectedError(ServerError, ValueError):
    """The server refused the request as invalid (HTTP 4xx): bad query, unreadable upload, too large, ..."""


class MissingExtraError(MMRError, ImportError):
    """A feature needs an optional dependency group that is not installed (the message names the extra)."""


class CheckpointMismatchError(MMRError, ValueError):
    """A published checkpoint does not hold exactly the tensors its config.json describes."""
