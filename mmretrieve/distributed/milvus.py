"""A Retriever whose index is a Milvus collection (the backend itself lives in mmretrieve.index.milvus)."""
from __future__ import annotations

from ..errors import EncoderMismatchError
from ..index.milvus import MilvusIndex
from ..retriever import Retriever

__all__ = ["milvus_retriever"]


def milvus_retriever(uri: str, collection: str = "mmretrieve", *, preset: str | None = None,
                     device: str | None = None, pretrained: str | None = None, weights: str | None = None,
                     video_head: str | None = None, video=None, audio_window: float | None = ...,  # type: ignore[assignment]
                     index_type: str = "FLAT", token: str | None = None, batch_size: int = 32,
                     num_workers: int | None = None, filter_templates: bool = False) -> Retriever:
    """A Retriever over a Milvus collection: opens it (rebuilding its encoder) or creates it from ``preset``."""
    try:
        index = MilvusIndex.open(uri, collection, token=token, filter_templates=filter_templates)
    except FileNotFoundError:
        index = None
    if index is not None:
        built_with = (index.fingerprint.get("encoder") or {}).get("preset")
        if preset is not None and built_with != preset:
            index.close()
            raise EncoderMismatchError(f"{index.path} was built with preset {built_with!r}, not {preset!r}")
        return Retriever.from_index(index, device=device, pretrained=pretrained, batch_size=batch_size, num_workers=num_workers)
    if preset is None:
        raise FileNotFoundError(f"no Milvus collection {collection!r} at {uri}; pass preset= to create one")
    return Retriever.create(
        preset,
        device=device,
        pretrained=pretrained,
        weights=weights,
        video_head=video_head,
        video=video,
        audio_window=audio_window,
        batch_size=batch_size,
        num_workers=num_workers,
        make_index=lambda dim, fp: MilvusIndex.create(
            dim, fp, uri=uri, collection=collection, index_type=index_type, token=token, filter_templates=filter_templates
        ),
    )
