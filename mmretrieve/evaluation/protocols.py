"""The names of the evaluation protocols, importable without the encoders (the command line lists
them before anything heavy is loaded)."""
from __future__ import annotations

#: Text <-> item retrieval protocols (``mmretrieve.evaluation.evaluate``).
PROTOCOLS = ("coco-5k", "msrvtt-1k-a", "msrvtt-full-test", "clotho-eval", "synthetic")

#: Composed-retrieval benchmarks (``mmretrieve.evaluation.composed``).
COMPOSED_PROTOCOLS = ("cirr", "fashioniq")
