"""The four modalities and how a file's extension names its modality."""
from __future__ import annotations

import enum
import os

__all__ = ["Modality", "IMAGE_EXTS", "VIDEO_EXTS", "AUDIO_EXTS", "modality_of_path", "parse_modality"]


class Modality(str, enum.Enum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"

    def __str__(self) -> str:  # "image", not "Modality.IMAGE"
        return self.value


IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv"})
AUDIO_EXTS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".m4a"})

_BY_EXT = {
    **{e: Modality.IMAGE for e in IMAGE_EXTS},
    **{e: Modality.VIDEO for e in VIDEO_EXTS},
    **{e: Modality.AUDIO for e in AUDIO_EXTS},
}


def modality_of_path(path: str | os.PathLike) -> Modality | None:
    """The modality a file's extension names, or None when the extension is not a media type."""
    return _BY_EXT.get(os.path.splitext(os.fspath(path))[1].lower())


def parse_modality(value: "str | Modality", argument: str = "modality") -> Modality:
    """Turn a user-supplied string into a Modality, with an error naming the argument."""
    if isinstance(value, Modality):
        return value
    try:
        return Modality(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in Modality)
        raise ValueError(f"{argument}={value!r} is not a modality; choose one of: {choices}") from None
