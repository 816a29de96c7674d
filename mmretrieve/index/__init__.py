"""Index backends behind one contract: vectors of every modality plus their records.

Modules: backend (IndexBackend, the contract Retriever and verify rely on), unified (UnifiedIndex:
faiss + SQLite on one machine), milvus (MilvusIndex: a Milvus collection), records (Record, Hit),
health (IndexCheck, CacheCheck), tuning (choosing and tuning the faiss structure: TuningConfig,
Plan), store (SQLite source of truth; all SQL lives there), vectors (faiss
index and its cache file), filters (modality / metadata filters as parameterised SQL), fingerprint,
locking (writer lock), layout (directory files, atomic writes, save recovery).
"""
from .backend import FileState, IndexBackend
from .health import CacheCheck, IndexCheck
from .milvus import MilvusIndex, build_milvus_filter, export_to_milvus
from .records import Hit, Record
from .tuning import Plan, TuningConfig
from .unified import IndexReadOnlyError, UnifiedIndex
from .vectors import IndexTrainingError

__all__ = ["IndexBackend", "FileState", "UnifiedIndex", "MilvusIndex", "Record", "Hit", "IndexCheck",
           "CacheCheck", "IndexReadOnlyError", "TuningConfig", "Plan", "IndexTrainingError", "build_milvus_filter", "export_to_milvus"]
