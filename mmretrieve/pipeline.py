"""Former home of batch embedding; the route now lives in :mod:`mmretrieve.embedding`.

Kept so existing ``from mmretrieve.pipeline import ...`` lines keep working; new code imports
``mmretrieve.embedding``.
"""
from .embedding import Embedded, Failure, Preparer, Source, default_workers, embed_sources, file_hash

__all__ = ["Source", "Embedded", "Failure", "Preparer", "embed_sources", "file_hash", "default_workers"]
