"""The modality dispatch every encoder's ``encode(modality, batch)`` shares."""
from __future__ import annotations

from typing import Any

import torch

from ..modality import Modality

__all__ = ["encode_modality"]


def encode_modality(encoder: Any, modality: Modality | str, media: Any, *,
                    max_words: int | None = None) -> torch.Tensor:
    """A collated batch of one modality -> ``encoder.encode_<modality>(...)``.

    text: a list of strings (cut to ``max_words`` tokens when given); image and audio: one tensor;
    video: ``(frames, mask)``.
    """
    m = Modality(modality)
    if m is Modality.TEXT:
        return encoder.encode_text(media, max_words=max_words)
    if m is Modality.IMAGE:
        return encoder.encode_image(media)
    if m is Modality.VIDEO:
        frames, mask = media
        return encoder.encode_video(frames, mask)
    return encoder.encode_audio(media)
