"""A synthetic multimodal corpus with exact ground truth, for tests, training checks and the quickstart.

Images show one big shape (circle/square/triangle/cross) of a saturated colour, a size and a position
on a plain light background. Videos show a coloured shape crossing most of the frame in a direction,
with a fading motion trail behind it, so the direction is visible in every single frame (a mean-pooling
video head cannot see frame order; the trail makes the direction learnable anyway). Sounds are tones
with a pitch (220/440/880 Hz), a rhythm (steady or pulsing on and off at about 4 Hz) and a timbre
(pure sine, buzzy square, bright sawtooth; band-limited, so nothing aliases).

Every item carries its attributes, and every caption records which attributes it mentions
(``SyntheticItem.mentions``), so callers can compute exactly which items a caption describes
(:func:`caption_queries`). Captions only mention attributes the item has. The first caption of an
item always mentions all of its attributes.

Everything is deterministic in ``seed``: the same call gives byte-identical images and audio files,
identical captions, and videos with identical decoded frames.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from itertools import product
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.modality import Modality, parse_modality

__all__ = [
    "VOCABULARY",
    "SyntheticItem",
    "SyntheticCorpus",
    "CaptionQuery",
    "make_corpus",
    "load_corpus",
    "split_corpus",
    "ground_truth",
    "caption_matches",
    "caption_queries",
    "render_image",
    "render_video",
    "render_audio",
]

# ----------------------------------------------------------------------------------------------------------
# Vocabulary: modality -> attribute -> values (order is the canonical order used by the generator).

_IMAGE_VOCAB = {
    "shape": ("circle", "square", "triangle", "cross"),
    "colour": ("red", "green", "blue", "yellow", "purple", "orange"),
    "size": ("small", "large"),
    "position": ("left", "right", "top", "bottom", "centre"),
}
_VIDEO_VOCAB = {
    "shape": ("circle", "square", "triangle", "cross"),
    "colour": ("red", "green", "blue", "yellow", "purple", "orange"),
    "direction": ("left", "right", "up", "down"),
}
_AUDIO_VOCAB = {
    "pitch": ("low", "medium", "high"),
    "rhythm": ("steady", "pulsing"),
    "timbre": ("sine", "square", "sawtooth"),
}

VOCABULARY: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        Modality.IMAGE.value: MappingProxyType(_IMAGE_VOCAB),
        Modality.VIDEO.value: MappingProxyType(_VIDEO_VOCAB),
        Modality.AUDIO.value: MappingProxyType(_AUDIO_VOCAB),
    }
)
"""Attribute vocabulary per modality: ``VOCABULARY["image"]["colour"] == ("red", ...)``."""

_RGB = {
    "red": (225, 25, 25),
    "green": (20, 185, 40),
    "blue": (30, 70, 240),
    "yellow": (245, 220, 15),
    "purple": (150, 40, 215),
    "orange": (255, 130, 0),
}
_BACKGROUND = (238, 238, 238)
_PITCH_HZ = {"low": 220.0, "medium": 440.0, "high": 880.0}

# ----------------------------------------------------------------------------------------------------------
# Caption templates: (template, attributes it mentions). Complete ones mention every attribute.

_POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
_DIRECTION_PHRASE = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}
_DIRECTION_WORD = {"left": "left", "right": "right", "up": "up", "down": "down"}
_TIMBRE_ADJ = {"sine": "pure", "square": "buzzy", "sawtooth": "bright"}
_RHYTHM_PHRASE = {"steady": "held steady", "pulsing": "pulsing on and off"}

_IMAGE_COMPLETE = (
    "a {size} {colour} {shape} {pos}",
    "a {size} {shape} in {colour} {pos}",
    "{pos} there is a {size} {colour} {shape}",
    "a picture of a {size} {colour} {shape} {pos}",
)
_IMAGE_PARTIAL = (
    ("a {colour} {shape}", ("colour", "shape")),
    ("a {size} {shape} in {colour}", ("size", "colour", "shape")),
    ("a {colour} {shape} {pos}", ("colour", "shape", "position")),
    ("a {size} {shape} {pos}", ("size", "shape", "position")),
    ("something {colour} {pos}", ("colour", "position")),
)
_VIDEO_COMPLETE = (
    "a {colour} {shape} moving {dir}",
    "a {shape} in {colour} moves {dir}",
    "a {colour} {shape} sliding {dir}",
    "a video of a {colour} {shape} going {dirw}",
)
_VIDEO_PARTIAL = (
    ("a moving {colour} {shape}", ("colour", "shape")),
    ("a {shape} moving {dir}", ("shape", "direction")),
    ("something {colour} moving {dir}", ("colour", "direction")),
)
_AUDIO_COMPLETE = (
    "a {pitch} {rhythm} {adj} tone",
    "a {rhythm} {wave} wave at {pitch} pitch",
    "a {adj} {pitch} pitched tone, {rphrase}",
    "the sound of a {pitch} {wave} wave {rphrase}",
)
_AUDIO_PARTIAL = (
    ("a {pitch} tone", ("pitch",)),
    ("a {adj} {rhythm} sound", ("timbre", "rhythm")),
    ("a {pitch} {wave} wave", ("pitch", "timbre")),
)


_ARTICLE = re.compile(r"(^|\s)a ([aeiou])")


def _fields(modality: Modality, a: Mapping[str, str]) -> dict[str, str]:
    if modality is Modality.IMAGE:
        return {**a, "pos": _POSITION_PHRASE[a["position"]]}
    if modality is Modality.VIDEO:
        return {**a, "dir": _DIRECTION_PHRASE[a["direction"]], "dirw": _DIRECTION_WORD[a["direction"]]}
    return {
        **a,
        "adj": _TIMBRE_ADJ[a["timbre"]],
        "wave": a["timbre"],
        "rphrase": _RHYTHM_PHRASE[a["rhythm"]],
    }


def _make_captions(
    modality: Modality, attrs: Mapping[str, str], rng: random.Random, n_complete: int, n_partial: int
) -> tuple[tuple[str, ...], tuple[Mapping[str, str], ...]]:
    complete, partial = {
        Modality.IMAGE: (_IMAGE_COMPLETE, _IMAGE_PARTIAL),
        Modality.VIDEO: (_VIDEO_COMPLETE, _VIDEO_PARTIAL),
        Modality.AUDIO: (_AUDIO_COMPLETE, _AUDIO_PARTIAL),
    }[modality]
    f = _fields(modality, attrs)
    # The first caption is always the canonical complete one; the others are drawn by the seed.
    chosen = [(complete[0], tuple(attrs))]
    chosen += [(t, tuple(attrs)) for t in rng.sample(complete[1:], min(n_complete - 1, len(complete) - 1))]
    chosen += rng.sample(partial, min(n_partial, len(partial)))
    captions = tuple(_ARTICLE.sub(r"\1an \2", t.format(**f)) for t, _ in chosen)
    mentions = tuple(MappingProxyType({k: attrs[k] for k in keys}) for _, keys in chosen)
    return captions, mentions


# ----------------------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True)
class SyntheticItem:
    """One generated file with its captions and ground-truth attributes.

    ``mentions[i]`` is the subset of ``attributes`` that ``captions[i]`` talks about.
    """

    path: str
    modality: Modality
    captions: tuple[str, ...]
    attributes: Mapping[str, str]
    mentions: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class CaptionQuery:
    """A caption used as a query: the item it was written for and every item it truly describes.

    ``source`` and ``relevant`` are indices into the item sequence given to :func:`caption_queries`.
    """

    text: str
    source: int
    mentions: Mapping[str, str]
    relevant: tuple[int, ...]


@dataclass(frozen=True)
class SyntheticCorpus:
    """The generated files under ``root`` and their ground truth."""

    root: str
    items: tuple[SyntheticItem, ...] = field(default_factory=tuple)

    def of(self, modality: "Modality | str") -> tuple[SyntheticItem, ...]:
        """The items of one modality, in corpus order."""
        m = parse_modality(modality, "modality")
        return tuple(it for it in self.items if it.modality is m)

    def __len__(self) -> int:
        return len(self.items)

    def write_manifest(self, path: "str | os.PathLike | None" = None, *, ground_truth: bool = False) -> str:
        """Write a JSONL manifest (one line per item: path, modality, captions) and return its path.

        Paths are written relative to the manifest's folder (the default location is
        ``root/manifest.jsonl``, so they are then relative to ``root``). With ``ground_truth=True``
        each line also holds ``metadata: {"attributes": {...}, "mentions": [...]}``, which
        :func:`load_corpus` reads back; both forms are valid input for the generic manifest reader.
        """
        out = os.fspath(path) if path is not None else os.path.join(self.root, "manifest.jsonl")
        base = os.path.dirname(os.path.abspath(out))
        os.makedirs(base, exist_ok=True)
        with open(out, "w", encoding="utf-8") as fh:
            for it in self.items:
                row: dict = {
                    "path": os.path.relpath(os.path.abspath(it.path), base).replace(os.sep, "/"),
                    "modality": it.modality.value,
                    "captions": list(it.captions),
                }
                if ground_truth:
                    row["metadata"] = {
                        "attributes": dict(it.attributes),
                        "mentions": [dict(m) for m in it.mentions],
                    }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return out


def load_corpus(manifest: "str | os.PathLike", root: "str | os.PathLike | None" = None) -> SyntheticCorpus:
    """Read a manifest written by :meth:`SyntheticCorpus.write_manifest` back into a corpus.

    ``root`` defaults to the manifest's folder. Attributes and mentions are restored when the
    manifest was written with ``ground_truth=True`` (otherwise they are empty).
    """
    manifest = os.fspath(manifest)
    base = os.path.dirname(os.path.abspath(manifest))
    items = []
    with open(manifest, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path = os.path.normpath(os.path.join(base, row["path"]))
                modality = parse_modality(row["modality"], f"{manifest}:{lineno} modality")
                captions = tuple(str(c) for c in row["captions"])
                meta = row.get("metadata") or {}
                attributes = dict(meta.get("attributes", {}))
                mentions = tuple(MappingProxyType(dict(m)) for m in meta.get("mentions", ()))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{manifest}: line {lineno} is not a synthetic-corpus row ({exc})") from None
            items.append(
                SyntheticItem(
                    path=path,
                    modality=modality,
                    captions=captions,
                    attributes=MappingProxyType(attributes),
                    mentions=mentions,
                )
            )
    return SyntheticCorpus(root=os.path.abspath(os.fspath(root)) if root is not None else base, items=tuple(items))


# ----------------------------------------------------------------------------------------------------------
# Ground truth helpers


def ground_truth(corpus: "SyntheticCorpus | Sequence[SyntheticItem]") -> list[dict]:
    """Each item's ground truth as plain dicts: index, path, modality, attributes, captions, mentions."""
    items = corpus.items if isinstance(corpus, SyntheticCorpus) else tuple(corpus)
    return [
        {
            "index": i,
            "path": it.path,
            "modality": it.modality.value,
            "attributes": dict(it.attributes),
            "captions": list(it.captions),
            "mentions": [dict(m) for m in it.mentions],
        }
        for i, it in enumerate(items)
    ]


def caption_matches(mentions: Mapping[str, str], attributes: Mapping[str, str]) -> bool:
    """True when an item with ``attributes`` has every attribute value the caption mentions."""
    return all(attributes.get(k) == v for k, v in mentions.items())


def caption_queries(items: Sequence[SyntheticItem], *, complete_only: bool = False) -> list[CaptionQuery]:
    """Every caption of ``items`` as a query, with the indices of all items (of the same modality) it describes.

    With ``complete_only`` only captions that mention all of their item's attributes are returned.
    A retrieval is correct when the retrieved index is in ``relevant`` (which always holds ``source``).
    """
    items = tuple(items)
    out = []
    for i, it in enumerate(items):
        if len(it.mentions) != len(it.captions):
            raise ValueError(f"{it.path}: item has no caption mentions (was the manifest written with ground_truth=True?)")
        for text, mention in zip(it.captions, it.mentions):
            if complete_only and len(mention) != len(it.attributes):
                continue
            relevant = tuple(
                j for j, other in enumerate(items) if other.modality is it.modality and caption_matches(mention, other.attributes)
            )
            out.append(CaptionQuery(text=text, source=i, mentions=mention, relevant=relevant))
    return out


def split_corpus(
    corpus: SyntheticCorpus, holdout_fraction: float = 0.25, seed: int = 0
) -> tuple[SyntheticCorpus, SyntheticCorpus]:
    """Split into (train, held_out) deterministically, per modality, keeping corpus order inside each part.

    Each modality with at least two items puts ``round(n * holdout_fraction)`` items (at least one
    when the fraction is positive, at most n - 1) in the held-out part.
    """
    if not (0.0 <= float(holdout_fraction) < 1.0) or math.isnan(holdout_fraction):
        raise ValueError(f"holdout_fraction={holdout_fraction!r} must be in [0, 1)")
    rng = random.Random(f"split:{seed}")
    held: set[int] = set()
    for m in Modality:
        idx = [i for i, it in enumerate(corpus.items) if it.modality is m]
        if len(idx) < 2 or holdout_fraction == 0:
            continue
        k = min(max(1, round(len(idx) * holdout_fraction)), len(idx) - 1)
        held.update(rng.sample(idx, k))
    train = tuple(it for i, it in enumerate(corpus.items) if i not in held)
    test = tuple(it for i, it in enumerate(corpus.items) if i in held)
    return SyntheticCorpus(corpus.root, train), SyntheticCorpus(corpus.root, test)


# ----------------------------------------------------------------------------------------------------------
# Attribute assignment: unique combinations while possible, every value covered as early as possible.


def _assign(vocab: Mapping[str, tuple[str, ...]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """n attribute dicts: each pick is the unused combination whose values have been used least so far.

    That covers every value as early as possible, keeps the value counts balanced, and repeats a
    combination only after all of them have been used.
    """
    keys = list(vocab)
    combos = list(product(*(range(len(vocab[k])) for k in keys)))
    counts = [np.zeros(len(vocab[k]), dtype=np.int64) for k in keys]
    out: list[tuple[int, ...]] = []
    while len(out) < n:
        pool = combos[:]
        rng.shuffle(pool)
        table = np.asarray(pool, dtype=np.int64).reshape(len(pool), len(keys))
        free = np.ones(len(pool), dtype=bool)
        for _ in range(min(n - len(out), len(pool))):
            score = sum(counts[a][table[:, a]] for a in range(len(keys)))
            score = np.where(free, score, np.iinfo(np.int64).max)
            best = int(np.argmin(score))  # first minimum: ties broken by the seeded shuffle
            free[best] = False
            for a, v in enumerate(table[best]):
                counts[a][v] += 1
            out.append(tuple(int(v) for v in table[best]))
    return [{k: vocab[k][v] for k, v in zip(keys, c)} for c in out]


# ----------------------------------------------------------------------------------------------------------
# Rendering


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (h, w) mask of a shape centred at (cx, cy) with 'radius' r (pixels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x += 0.5
    y += 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.86
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":  # upright, equilateral-ish, fills the same box as the others
        top, bottom = cy - r, cy + r * 0.85
        half = (y - top) / (bottom - top) * r * 1.05
        return (y >= top) & (y <= bottom) & (np.abs(dx) <= half)
    if shape == "cross":
        t = r * 0.36
        return ((np.abs(dx) <= r) & (np.abs(dy) <= t)) | ((np.abs(dy) <= r) & (np.abs(dx) <= t))
    raise ValueError(f"shape={shape!r} is not one of {_IMAGE_VOCAB['shape']}")


def _jitter_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(_RGB[colour], dtype=np.float32)
    return np.clip(base + rng.uniform(-12, 12, size=3), 0, 255).astype(np.float32)


def render_image(attributes: Mapping[str, str], size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """An (size, size, 3) uint8 image of the described shape; ``rng`` adds small jitter (None = exact)."""
    j = (lambda lo, hi: float(rng.uniform(lo, hi))) if rng is not None else (lambda lo, hi: 0.0)
    s = float(size)
    offset = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "centre": (0, 0)}[attributes["position"]]
    r = (0.24 if attributes["size"] == "large" else 0.13) * s * (1.0 + j(-0.08, 0.08))
    cx = s / 2 + offset[0] * 0.26 * s + j(-0.03, 0.03) * s
    cy = s / 2 + offset[1] * 0.26 * s + j(-0.03, 0.03) * s
    colour = _jitter_colour(attributes["colour"], rng) if rng is not None else np.asarray(_RGB[attributes["colour"]], np.float32)
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = _BACKGROUND
    img[_shape_mask(attributes["shape"], size, size, cx, cy, r)] = colour.astype(np.uint8)
    return img


def render_video(
    attributes: Mapping[str, str], size: int = 64, num_frames: int = 16, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames of a shape crossing ~70% of the frame, with a fading trail."""
    j = (lambda lo, hi: float(rng.uniform(lo, hi))) if rng is not None else (lambda lo, hi: 0.0)
    s = float(size)
    d = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[attributes["direction"]]
    r = 0.17 * s * (1.0 + j(-0.08, 0.08))
    across = 0.5 * s + j(-0.08, 0.08) * s  # the coordinate perpendicular to the motion
    start, end = 0.15 * s, 0.85 * s
    colour = _jitter_colour(attributes["colour"], rng) if rng is not None else np.asarray(_RGB[attributes["colour"]], np.float32)
    bg = np.asarray(_BACKGROUND, dtype=np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    step = (end - start) / max(num_frames - 1, 1)
    for t in range(num_frames):
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = bg
        # Trail: fainter copies behind the shape (drawn oldest first), then the shape itself.
        for lag, alpha in ((3.0, 0.18), (2.0, 0.32), (1.0, 0.5), (0.0, 1.0)):
            along = start + (t - lag * 1.3) * step
            if d[0] < 0 or d[1] < 0:  # moving left/up: run the path backwards
                along = s - along
            cx, cy = (along, across) if d[0] else (across, along)
            m = _shape_mask(attributes["shape"], size, size, cx, cy, r)
            img[m] = alpha * colour + (1.0 - alpha) * img[m]
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


def _band_limited(timbre: str, freq: float, t: np.ndarray, sample_rate: int, phase: float) -> np.ndarray:
    nyquist = sample_rate / 2
    if timbre == "sine":
        return np.sin(2 * np.pi * freq * t + phase)
    out = np.zeros_like(t)
    k = 1
    while k * freq < nyquist * 0.95:
        if timbre == "square":
            if k % 2:
                out += np.sin(2 * np.pi * k * freq * t + k * phase) / k
        elif timbre == "sawtooth":
            out += ((-1) ** (k + 1)) * np.sin(2 * np.pi * k * freq * t + k * phase) / k
        else:
            raise ValueError(f"timbre={timbre!r} is not one of {_AUDIO_VOCAB['timbre']}")
        k += 1
    return out / (np.max(np.abs(out)) + 1e-9)


def render_audio(
    attributes: Mapping[str, str], seconds: float = 2.0, sample_rate: int = 16000, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of the described tone; ``rng`` adds small detune/level/phase jitter."""
    j = (lambda lo, hi: float(rng.uniform(lo, hi))) if rng is not None else (lambda lo, hi: 0.0)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    freq = _PITCH_HZ[attributes["pitch"]] * (1.0 + j(-0.02, 0.02))
    wave = _band_limited(attributes["timbre"], freq, t, sample_rate, phase=j(0, 2 * np.pi))
    ramp = max(1, int(0.005 * sample_rate))
    if attributes["rhythm"] == "pulsing":
        rate = 4.0 * (1.0 + j(-0.1, 0.1))
        period = sample_rate / rate
        pos = np.mod(np.arange(n) + j(0, 0.2) * period, period)
        on = period / 2
        env = np.where(pos < on, 1.0, 0.0)
        # Soft edges (5 ms raised-cosine) so the gate does not click.
        rise = np.clip(pos / ramp, 0, 1)
        fall = np.clip((on - pos) / ramp, 0, 1)
        env = env * 0.5 * (1 - np.cos(np.pi * np.minimum(rise, fall)))
    elif attributes["rhythm"] == "steady":
        env = np.ones(n)
    else:
        raise ValueError(f"rhythm={attributes['rhythm']!r} is not one of {_AUDIO_VOCAB['rhythm']}")
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (2 * ramp))
    level = 0.5 * (1.0 + j(-0.15, 0.15))
    return (level * wave * env * fade).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# The corpus


def _check_count(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be a non-negative integer")
    return int(value)


def make_corpus(
    root: "str | os.PathLike",
    *,
    n_images: int = 24,
    n_videos: int = 12,
    n_audio: int = 12,
    seed: int = 0,
    image_size: int = 64,
    video_seconds: float = 2.0,
    video_fps: int = 8,
    video_size: int = 64,
    audio_seconds: float = 2.0,
    sample_rate: int = 16000,
    video_ext: str = ".mp4",
    audio_ext: str = ".wav",
    image_ext: str = ".png",
    captions_complete: int = 3,
    captions_partial: int = 2,
    progress: bool = False,
) -> SyntheticCorpus:
    """Generate images, videos and sounds under ``root`` (created if needed) and return their ground truth.

    Files go to ``root/images/image_0000.png``, ``root/videos/video_0000.mp4``, ``root/audio/audio_0000.wav``.
    Attribute combinations are distinct while the count allows (then they repeat, with different
    jitter), and every attribute value appears once a modality has as many items as its largest
    attribute has values. Each item gets ``captions_complete`` captions mentioning all its attributes
    (at most 4; the first is canonical) followed by ``captions_partial`` mentioning a subset (at most
    3 for video/audio, 5 for images).
    """
    n_images = _check_count("n_images", n_images)
    n_videos = _check_count("n_videos", n_videos)
    n_audio = _check_count("n_audio", n_audio)
    if image_size < 8 or video_size < 8 or video_size % 2:
        raise ValueError(f"image_size={image_size} must be >= 8 and video_size={video_size} even and >= 8")
    if not (video_seconds > 0 and video_fps > 0 and audio_seconds > 0 and sample_rate >= 8000):
        raise ValueError(
            f"video_seconds={video_seconds}, video_fps={video_fps}, audio_seconds={audio_seconds} must be > 0 "
            f"and sample_rate={sample_rate} >= 8000"
        )
    if captions_complete < 1:
        raise ValueError(f"captions_complete={captions_complete} must be at least 1")
    for name, ext in (("image_ext", image_ext), ("video_ext", video_ext), ("audio_ext", audio_ext)):
        if not ext.startswith("."):
            raise ValueError(f"{name}={ext!r} must start with a dot, e.g. '.png'")

    root = os.path.abspath(os.fspath(root))
    plan: list[tuple[Modality, int, dict[str, str]]] = []
    for modality, n in ((Modality.IMAGE, n_images), (Modality.VIDEO, n_videos), (Modality.AUDIO, n_audio)):
        attrs = _assign(VOCABULARY[modality.value], n, random.Random(f"assign:{modality.value}:{seed}"))
        plan.extend((modality, i, a) for i, a in enumerate(attrs))
        if n:
            os.makedirs(os.path.join(root, {"image": "images", "video": "videos", "audio": "audio"}[modality.value]), exist_ok=True)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="synthetic corpus", unit="file")
    num_frames = max(1, int(round(video_seconds * video_fps)))
    items = []
    try:
        for modality, i, attrs in plan:
            # Per-item generators derived from (seed, modality, index): items do not depend on each other.
            nrng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, "iva".index(modality.value[0]), i])
            crng = random.Random(f"captions:{modality.value}:{seed}:{i}")
            if modality is Modality.IMAGE:
                path = os.path.join(root, "images", f"image_{i:04d}{image_ext}")
                write_image(path, render_image(attrs, image_size, nrng))
            elif modality is Modality.VIDEO:
                path = os.path.join(root, "videos", f"video_{i:04d}{video_ext}")
                write_video(path, render_video(attrs, video_size, num_frames, nrng), fps=video_fps)
            else:
                path = os.path.join(root, "audio", f"audio_{i:04d}{audio_ext}")
                write_audio(path, render_audio(attrs, audio_seconds, sample_rate, nrng), sample_rate)
            captions, mentions = _make_captions(modality, attrs, crng, captions_complete, captions_partial)
            items.append(
                SyntheticItem(
                    path=path, modality=modality, captions=captions, attributes=MappingProxyType(attrs), mentions=mentions
                )
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SyntheticCorpus(root=root, items=tuple(items))
