"""The one route from a file to a vector, shared by indexing, training, evaluation and Ray.

    sampling.py  the one sampling config (frames, fps, window, backend, keyframe snap, audio window)
    prepare.py   decoding + deterministic preprocessing into per-window tensors (worker side);
                 training's seeded augmentation is an option of it
    encode.py    collation, autocast, the chunked forward pass (``encoder.encode(modality, batch)``),
                 and the pooling rule for whole-item vectors
    embed.py     batching with DataLoader worker processes: window vectors (indexing) and whole-item
                 vectors (evaluation, whole-file queries)
"""
from .embed import Embedded, Failure, default_workers, embed_items, embed_sources, prepare_all
from .encode import AMP_MODES, autocast, collate, encode_batch, encode_texts, encode_windows, pool_windows, to_numpy, video_chunk
from .prepare import Augment, Prepared, Preparer, Source, file_hash, source_of_sample
from .sampling import AUDIO_MIN_TAIL, OVERRIDABLE, Sampling

__all__ = [
    "AMP_MODES",
    "AUDIO_MIN_TAIL",
    "OVERRIDABLE",
    "Augment",
    "Embedded",
    "Failure",
    "Prepared",
    "Preparer",
    "Sampling",
    "Source",
    "autocast",
    "collate",
    "default_workers",
    "embed_items",
    "embed_sources",
    "encode_batch",
    "encode_texts",
    "encode_windows",
    "file_hash",
    "pool_windows",
    "prepare_all",
    "source_of_sample",
    "to_numpy",
    "video_chunk",
]
