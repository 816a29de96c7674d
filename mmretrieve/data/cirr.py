"""CIRR reader (composed image retrieval on real-life images), the official rc2 release.

Layout (see datasets/cirr.md)::

    root/captions/cap.rc2.{train,val,test1}.json      [{"pairid", "reference", "target_hard",
                                                        "target_soft", "caption",
                                                        "img_set": {"id", "members": [6 names]}}]
                                                      (test1: no target_hard / target_soft)
    root/image_splits/split.rc2.{train,val,test1}.json  {"name": "./dev/dev-245-2-img0.png", ...}
    root/dev/..., root/test1/..., root/train/NN/...    the NLVR2 images (or under root/img_raw/)

An image path in the split file is relative to ``root`` (or ``root/img_raw``). The test split's
targets are hidden: its queries have ``target=None`` and are scored by the benchmark's server
(:func:`mmretrieve.evaluation.composed.cirr_submission` writes the files it takes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .common import DatasetError, _load_json, _Problems

__all__ = ["CirrQuery", "CirrSplit", "read_cirr", "CIRR_SPLITS"]

CIRR_SPLITS = ("train", "val", "test1")
_HINT = "Expected layout: see datasets/cirr.md (captions/cap.rc2.SPLIT.json, image_splits/split.rc2.SPLIT.json)."


@dataclass(frozen=True)
class CirrQuery:
    """One query: reference image name + modification caption -> target name (None on test1).

    ``members``: the query's image set (six near-identical images) for Recall_subset@K.
    """

    pairid: int
    reference: str
    caption: str
    target: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class CirrSplit:
    """The queries of one split and every image of that split (name -> absolute path)."""

    split: str
    queries: tuple[CirrQuery, ...]
    images: dict
    skipped: tuple[tuple[str, str], ...] = ()


def read_cirr(root: str | os.PathLike, split: str = "val", *, skip_missing: bool = False) -> CirrSplit:
    """Read a CIRR split. Missing files or malformed rows raise DatasetError listing every problem;
    with ``skip_missing`` images absent on disk (and queries that need them) are left out and reported."""
    root = os.fspath(root)
    if split not in CIRR_SPLITS:
        raise ValueError(f"split={split!r} is not a CIRR split; choose one of: {', '.join(CIRR_SPLITS)}")
    problems = _Problems(f"CIRR {split} at {root}", _HINT)
    cap_path = os.path.join(root, "captions", f"cap.rc2.{split}.json")
    img_path = os.path.join(root, "image_splits", f"split.rc2.{split}.json")
    caps = _load_json(cap_path, problems)
    names = _load_json(img_path, problems)
    problems.raise_fatal()
    if not isinstance(names, dict):
        raise DatasetError(problems.name, [f"{img_path}: expected an object name -> relative path"], _HINT)
    if not isinstance(caps, list):
        raise DatasetError(problems.name, [f"{cap_path}: expected a list of query objects"], _HINT)
    images: dict[str, str] = {}
    bases = [root, os.path.join(root, "img_raw")]
    for name, rel in names.items():
        if not isinstance(rel, str):
            problems.add(f"{img_path}: {name}: path {rel!r} is not a string")
            continue
        found = next((p for p in (os.path.normpath(os.path.join(b, rel)) for b in bases) if os.path.isfile(p)), None)
        if found is None:
            problems.item(f"{img_path}: {name}", f"image file {rel} not found under {root} or {bases[1]}")
        else:
            images[name] = found
    queries = []
    for i, row in enumerate(caps):
        where = f"{cap_path}: row {i}"
        try:
            pairid = int(row["pairid"])
            ref, caption = str(row["reference"]), str(row["caption"])
            members = tuple(str(m) for m in row["img_set"]["members"])
            target = None if split == "test1" else str(row["target_hard"])
        except (KeyError, TypeError, ValueError) as e:
            problems.add(f"{where}: malformed query ({type(e).__name__}: {e})")
            continue
        needed = [n for n in (ref, target) if n is not None]
        unknown = [n for n in needed if n not in names]
        if unknown:
            problems.add(f"{where} (pairid {pairid}): {unknown[0]} is not in {img_path}")
            continue
        if any(n not in images for n in needed):
            continue  # its image is reported missing above
        queries.append(CirrQuery(pairid, ref, caption, target, members))
    skipped = problems.finish(skip_missing)
    return CirrSplit(split, tuple(queries), images, skipped)
