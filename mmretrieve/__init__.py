"""mmretrieve: multimodal cross-modal retrieval — text, image, video and audio in one CLIP-aligned space.

    import mmretrieve as mmr
    r = mmr.Retriever.create("clip-vit-b32")
    r.add("~/media")
    r.search("a dog catching a frisbee", modality="video", k=10)

Public names are imported on first use, so ``import mmretrieve`` stays light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Retriever": "retriever",
    "AddReport": "retriever",
    "Query": "query",
    "Composed": "query",
    "Arithmetic": "query",
    "VideoArray": "query",
    "AudioArray": "query",
    "DEFAULT_COMPOSED_TEXT_WEIGHT": "query",
    "Hit": "index",
    "Record": "index",
    "UnifiedIndex": "index",
    "Modality": "modality",
    "create_encoder": "models",
    "MultiModalEncoder": "models",
    "list_presets": "models",
    "get_preset": "models",
    "VideoSampling": "media.video",
    "Sampling": "embedding",
    "MMRError": "errors",
    "MediaError": "errors",
    "UnsupportedMediaError": "errors",
    "EncoderMismatchError": "errors",
    "WeightsUnavailableError": "errors",
    "IndexCorruptError": "errors",
    "IndexLockedError": "errors",
    "ServerError": "errors",
    "RequestRejectedError": "errors",
    "Client": "client",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmretrieve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mmretrieve.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .errors import *  # noqa: F401,F403
    from .embedding import Sampling  # noqa: F401
    from .index import Hit, Record, UnifiedIndex  # noqa: F401
    from .media.video import VideoSampling  # noqa: F401
    from .modality import Modality  # noqa: F401
    from .models import MultiModalEncoder, create_encoder, get_preset, list_presets  # noqa: F401
    from .query import *  # noqa: F401,F403
    from .client import Client  # noqa: F401
    from .retriever import AddReport, Retriever  # noqa: F401
