"""Data: dataset readers for the official layouts (COCO, MSR-VTT, Clotho), manifests, tar shards,
and the synthetic multimodal corpus with ground truth."""
from .clotho import read_clotho
from .coco import read_coco
from .common import Dataset, DatasetError, FlatCaptions, Sample
from .manifest import read_manifest
from .msrvtt import read_msrvtt
from .shards import ShardReader, ShardSample, expand_pattern, read_shards
from .synthetic import SyntheticCorpus, SyntheticItem, make_corpus, split_corpus

__all__ = [
    "Dataset",
    "DatasetError",
    "FlatCaptions",
    "Sample",
    "ShardReader",
    "ShardSample",
    "SyntheticCorpus",
    "SyntheticItem",
    "expand_pattern",
    "make_corpus",
    "read_clotho",
    "read_coco",
    "read_manifest",
    "read_msrvtt",
    "read_shards",
    "split_corpus",
]
