"""Query objects: a single input of an explicit modality, composed queries and weighted arithmetic.

The modality of a query is always explicit: a plain ``str`` is text, a ``pathlib.Path`` is a file whose
extension names the modality, a PIL image is an image; anything else (arrays, tensors, strings that are
file names) goes through ``Query.image(...)``, ``Query.video(...)``, ``Query.audio(...)`` or ``Query.file(...)``.
"""
from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .modality import Modality, modality_of_path, parse_modality

__all__ = [
    "Query",
    "Composed",
    "Arithmetic",
    "VideoArray",
    "AudioArray",
    "QueryLike",
    "DEFAULT_COMPOSED_TEXT_WEIGHT",
    "COMPOSED_METHODS",
    "as_query",
    "fuse",
]

#: Weight of the modification text in a composed query: fused = normalise((1 - w) * ref + w * text).
#: Equal weights are the common zero-shot baseline for CLIP-based composed retrieval.
DEFAULT_COMPOSED_TEXT_WEIGHT = 0.5

#: How a composed query becomes one vector: "arithmetic" (weighted sum of the two vectors) or
#: "inversion" (the reference becomes a pseudo word in a prompt for the text tower; see models/inversion.py).
COMPOSED_METHODS = ("arithmetic", "inversion")


@dataclass(frozen=True)
class VideoArray:
    """An in-memory video: RGB uint8 frames (T, H, W, 3) and their frame rate."""

    frames: Any
    fps: float

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"VideoArray: fps={self.fps!r} must be a positive number")


@dataclass(frozen=True)
class AudioArray:
    """An in-memory recording: samples (N,) or (N, channels) and their sample rate in Hz."""

    samples: Any
    sample_rate: int

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(f"AudioArray: sample_rate={self.sample_rate!r} must be a positive integer")


@dataclass(frozen=True)
class Query:
    """One query input and its modality. Combine with ``+``, ``-`` and ``*`` for arithmetic queries."""

    value: Any
    modality: Modality

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", parse_modality(self.modality, "Query.modality"))
        if self.modality is Modality.TEXT and not isinstance(self.value, str):
            raise TypeError(f"Query.text expects a str, got {type(self.value).__name__}")
        if self.modality is Modality.TEXT and not self.value.strip():
            raise ValueError("Query.text: empty text")
        if isinstance(self.value, str) and self.modality is not Modality.TEXT and not self.value.strip():
            raise ValueError(f"Query.{self.modality.value}: empty file name")

    @classmethod
    def text(cls, text: str) -> "Query":
        return cls(text, Modality.TEXT)

    @classmethod
    def image(cls, image: Any) -> "Query":
        """A file path, PIL image, or RGB array (H, W, 3) / tensor."""
        return cls(image, Modality.IMAGE)

    @classmethod
    def video(cls, video: Any) -> "Query":
        """A file path or a :class:`VideoArray`."""
        return cls(video, Modality.VIDEO)

    @classmethod
    def audio(cls, audio: Any) -> "Query":
        """A file path or an :class:`AudioArray`."""
        return cls(audio, Modality.AUDIO)

    @classmethod
    def file(cls, path: str | os.PathLike) -> "Query":
        """A media file; its extension names the modality."""
        modality = modality_of_path(path)
        if modality is None:
            raise ValueError(f"{os.fspath(path)}: unknown media extension; use Query.image/video/audio to say the modality")
        return cls(os.fspath(path), modality)

    # arithmetic -------------------------------------------------------------------------------
    def __mul__(self, weight: float) -> "Arithmetic":
        return Arithmetic(((float(weight), self),))

    __rmul__ = __mul__

    def __neg__(self) -> "Arithmetic":
        return self * -1.0

    def __add__(self, other: "Query | Arithmetic") -> "Arithmetic":
        return Arithmetic(((1.0, self),)) + other

    def __sub__(self, other: "Query | Arithmetic") -> "Arithmetic":
        return Arithmetic(((1.0, self),)) - other


@dataclass(frozen=True)
class Arithmetic:
    """A weighted sum of query embeddings, normalised: ``Query.image("a.jpg") - Query.text("day") + Query.text("night")``."""

    terms: tuple[tuple[float, Query], ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("Arithmetic query needs at least one term")
        for weight, term in self.terms:
            if not isinstance(term, Query):
                raise TypeError(f"Arithmetic terms must be Query objects, got {type(term).__name__}")
            if not math.isfinite(weight):
                raise ValueError(f"Arithmetic weight {weight!r} is not finite")

    def _terms_of(self, other: "Query | Arithmetic") -> tuple[tuple[float, Query], ...]:
        if isinstance(other, Query):
            return ((1.0, other),)
        if isinstance(other, Arithmetic):
            return other.terms
        raise TypeError(f"cannot combine a query with {type(other).__name__}")

    def __add__(self, other: "Query | Arithmetic") -> "Arithmetic":
        return Arithmetic(self.terms + self._terms_of(other))

    def __sub__(self, other: "Query | Arithmetic") -> "Arithmetic":
        return Arithmetic(self.terms + tuple((-w, q) for w, q in self._terms_of(other)))

    def __mul__(self, weight: float) -> "Arithmetic":
        return Arithmetic(tuple((w * float(weight), q) for w, q in self.terms))

    __rmul__ = __mul__


@dataclass(frozen=True, init=False)
class Composed:
    """A reference image, video or sound plus a modification in words ("this photo, but at night").

    ``method="arithmetic"`` (default): ``normalise((1 - weight) * ref + weight * text)`` over
    L2-normalised embeddings; ``weight`` is the text's share, default :data:`DEFAULT_COMPOSED_TEXT_WEIGHT`.
    ``method="inversion"``: the reference is mapped to a pseudo word ``*`` and ``template`` (default
    the network's, Pic2Word's ``"a photo of * , {text}"``) is encoded by the text tower; ``inversion``
    names the network (a path or a ``TextualInversion``; default: the one shipped for the preset).
    """

    reference: Query
    text: str
    weight: float
    method: str
    template: Any
    inversion: Any

    def __init__(
        self,
        *,
        text: str,
        image: Any = None,
        video: Any = None,
        audio: Any = None,
        weight: float = DEFAULT_COMPOSED_TEXT_WEIGHT,
        method: str = "arithmetic",
        template: str | None = None,
        inversion: Any = None,
    ) -> None:
        given = [(m, v) for m, v in ((Modality.IMAGE, image), (Modality.VIDEO, video), (Modality.AUDIO, audio)) if v is not None]
        if len(given) != 1:
            raise ValueError("Composed needs exactly one reference: image=..., video=... or audio=...")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Composed needs a non-empty modification text: text='...'")
        if not (isinstance(weight, (int, float)) and 0.0 <= weight <= 1.0):
            raise ValueError(f"Composed weight={weight!r} must be within [0, 1] (the text's share)")
        if method not in COMPOSED_METHODS:
            raise ValueError(f"Composed method={method!r}: choose one of {', '.join(COMPOSED_METHODS)}")
        if method == "arithmetic" and (template is not None or inversion is not None):
            raise ValueError("Composed: template= and inversion= apply to method='inversion' only")
        if template is not None and (not isinstance(template, str) or "{text}" not in template
                                     or template.count("*") != 1):
            raise ValueError(f"Composed template={template!r}: a prompt with one '*' (the reference) and "
                             f"'{{text}}' (the modification), e.g. 'a photo of * , {{text}}'")
        modality, value = given[0]
        object.__setattr__(self, "reference", Query(value, modality))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "weight", float(weight))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "inversion", inversion)

    def as_arithmetic(self) -> Arithmetic:
        """The weighted sum this query stands for (``method="arithmetic"`` only)."""
        if self.method != "arithmetic":
            raise ValueError(f"Composed(method={self.method!r}) is not a weighted sum: embed it with a Retriever")
        return Arithmetic(((1.0 - self.weight, self.reference), (self.weight, Query.text(self.text))))


QueryLike = Union[str, os.PathLike, Query, Composed, Arithmetic, Any]


def as_query(value: QueryLike) -> Query | Arithmetic | Composed:
    """Turn what a user passed to ``search`` into a Query or an Arithmetic (arithmetic composed queries
    included); a ``Composed(method="inversion")`` is returned as is (it needs the encoder's text tower)."""
    if isinstance(value, (Query, Arithmetic)):
        return value
    if isinstance(value, Composed):
        return value if value.method == "inversion" else value.as_arithmetic()
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("empty text query")
        return Query.text(value)
    if isinstance(value, pathlib.PurePath):
        return Query.file(value)
    if isinstance(value, VideoArray):
        return Query.video(value)
    if isinstance(value, AudioArray):
        return Query.audio(value)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(value, Image.Image):
        return Query.image(value)
    raise TypeError(
        f"cannot tell the modality of a {type(value).__name__} query: wrap it as Query.image(...), "
        "Query.video(VideoArray(...)), Query.audio(AudioArray(...)) or pass a pathlib.Path"
    )


def fuse(vectors: np.ndarray, weights: np.ndarray | list[float]) -> np.ndarray:
    """Weighted sum of L2-normalised vectors (rows), normalised again; refuses a zero result."""
    vectors = np.asarray(vectors, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    if vectors.ndim != 2 or len(w) != len(vectors):
        raise ValueError(f"fuse: {len(w)} weights for {len(vectors)} vectors")
    w64 = w.astype(np.float64)
    if not np.all(np.isfinite(w64)):
        raise ValueError("fuse: weights must be finite numbers")
    scale = float(np.abs(w64).max()) if len(w64) else 0.0
    if scale == 0.0:
        raise ValueError("the weighted query terms cancel out (all weights are zero): change the weights")
    # only the ratios of the weights matter: scale them to max |w| = 1 first, so tiny or huge
    # weights neither underflow nor overflow, and "cancel out" means relative to the largest term
    total = ((w64 / scale) * vectors.astype(np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ValueError("the weighted query terms cancel out (zero vector): change the weights")
    return (total / norm).astype(np.float32)
