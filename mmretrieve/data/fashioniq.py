"""FashionIQ reader (composed retrieval of dresses, shirts and tops with two relative captions).

Layout (see datasets/fashioniq.md)::

    root/captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        [{"target": "B005X4PL1G", "candidate": "B008MTHLHQ", "captions": ["is longer", "is lighter"]}]
    root/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   ["B005X4PL1G", ...]
    root/images/B005X4PL1G.png  (.jpg also accepted)

The gallery of a category's split is its ``image_splits`` list. The two captions of a query are joined
into one modification, "<first> and <second>" with trailing ".?, " stripped (as CLIP4Cir and SEARLE do).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .common import DatasetError, _load_json, _Problems

__all__ = ["FashionIQQuery", "FashionIQSplit", "read_fashioniq", "join_captions", "FASHIONIQ_CATEGORIES",
           "FASHIONIQ_SPLITS"]

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
_HINT = "Expected layout: see datasets/fashioniq.md (captions/cap.CATEGORY.SPLIT.json, image_splits/split.CATEGORY.SPLIT.json, images/)."
_EXTS = (".png", ".jpg", ".jpeg")


def join_captions(captions: tuple[str, ...] | list[str]) -> str:
    """The two relative captions as one modification text."""
    parts = [c.strip().strip(".?, ").strip() for c in captions]
    return " and ".join(p for p in parts if p)


@dataclass(frozen=True)
class FashionIQQuery:
    """Reference (candidate) image + two relative captions -> target image name."""

    reference: str
    target: str | None
    captions: tuple[str, ...]
    reference_path: str

    @property
    def text(self) -> str:
        return join_captions(self.captions)


@dataclass(frozen=True)
class FashionIQSplit:
    """One category's split: its queries and gallery (name -> absolute image path)."""

    category: str
    split: str
    queries: tuple[FashionIQQuery, ...]
    images: dict
    skipped: tuple[tuple[str, str], ...] = ()


def _image(root: str, name: str) -> str | None:
    for ext in _EXTS:
        p = os.path.join(root, "images", name + ext)
        if os.path.isfile(p):
            return p
    return None


def read_fashioniq(root: str | os.PathLike, category: str, split: str = "val", *,
                   skip_missing: bool = False) -> FashionIQSplit:
    """Read one category's split; DatasetError lists every problem (missing images skippable)."""
    root = os.fspath(root)
    if category not in FASHIONIQ_CATEGORIES:
        raise ValueError(f"category={category!r}: choose one of {', '.join(FASHIONIQ_CATEGORIES)}")
    if split not in FASHIONIQ_SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(FASHIONIQ_SPLITS)}")
    problems = _Problems(f"FashionIQ {category} {split} at {root}", _HINT)
    cap_path = os.path.join(root, "captions", f"cap.{category}.{split}.json")
    split_path = os.path.join(root, "image_splits", f"split.{category}.{split}.json")
    caps = _load_json(cap_path, problems)
    names = _load_json(split_path, problems)
    problems.raise_fatal()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(problems.name, [f"{split_path}: expected a list of image names"], _HINT)
    if not isinstance(caps, list):
        raise DatasetError(problems.name, [f"{cap_path}: expected a list of query objects"], _HINT)
    images: dict[str, str] = {}
    for n in names:
        p = _image(root, n)
        if p is None:
            problems.item(f"{split_path}: {n}", f"no image {n}.png/.jpg in {os.path.join(root, 'images')}")
        else:
            images[n] = p
    queries = []
    for i, row in enumerate(caps):
        where = f"{cap_path}: row {i}"
        try:
            ref = str(row["candidate"])
            target = None if split == "test" and "target" not in row else str(row["target"])
            captions = tuple(str(c) for c in row["captions"])
        except (KeyError, TypeError, ValueError) as e:
            problems.add(f"{where}: malformed query ({type(e).__name__}: {e})")
            continue
        if len(captions) != 2:
            problems.add(f"{where}: expected 2 captions, got {len(captions)}")
            continue
        ref_path = images.get(ref) or _image(root, ref)
        if ref_path is None:
            problems.item(f"{where}", f"reference image {ref} not found in {os.path.join(root, 'images')}")
            continue
        if target is not None and target not in names:
            problems.add(f"{where}: target {target} is not in the gallery {split_path}")
            continue
        if target is not None and target not in images:
            continue  # reported missing above
        queries.append(FashionIQQuery(ref, target, captions, ref_path))
    skipped = problems.finish(skip_missing)
    return FashionIQSplit(category, split, tuple(queries), images, skipped)
