"""Beyond one machine on existing engines: Ray Data for embedding, Milvus for the index.

Both are optional extras (``pip install 'mmretrieve[ray]'`` / ``'mmretrieve[milvus]'``); importing this
package imports neither engine until a function that needs it is called. The Milvus backend itself
is an index backend (``mmretrieve.index.milvus``); its names are re-exported here.
"""
from __future__ import annotations

from typing import Any

__all__ = ["embed_with_ray", "embed_dataset", "index_with_ray", "RayIndexReport",
           "MilvusIndex", "export_to_milvus", "milvus_retriever", "build_milvus_filter"]

_WHERE = {
    "embed_with_ray": "ray_embed", "embed_dataset": "ray_embed", "index_with_ray": "ray_embed",
    "RayIndexReport": "ray_embed",
    "MilvusIndex": "..index.milvus", "export_to_milvus": "..index.milvus", "milvus_retriever": "milvus",
    "build_milvus_filter": "..index.milvus",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mmretrieve.distributed' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name)
