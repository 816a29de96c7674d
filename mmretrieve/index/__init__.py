"""The unified index: faiss inner-product vectors of every modality plus SQLite metadata.

Modules: records (Record, Hit), store (SQLite source of truth), vectors (faiss index and its cache
file), filters (modality / metadata filters as parameterised SQL), locking (writer lock), layout
(directory files, atomic writes, save recovery), unified (UnifiedIndex).
"""
from .records import Hit, Record
from .unified import IndexReadOnlyError, UnifiedIndex
from .vectors import IndexTrainingError

__all__ = ["UnifiedIndex", "Record", "Hit", "IndexReadOnlyError", "IndexTrainingError"]
