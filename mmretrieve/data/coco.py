"""COCO captions reader: the official ``captions_*.json`` files and Karpathy's ``dataset_coco.json``.

Layout (see datasets/coco.md)::

    root/annotations/captions_train2017.json   {"images": [{"id", "file_name", ...}],
    root/annotations/captions_val2017.json      "annotations": [{"image_id", "id", "caption"}]}
    root/train2017/000000000009.jpg ...  root/val2017/...
    root/dataset_coco.json                     Karpathy split: {"images": [{"filepath", "filename",
                                                 "split", "cocoid", "sentences": [{"raw", ...}]}]}
    root/train2014/, root/val2014/              images the Karpathy file names (COCO_val2014_*.jpg)

The Karpathy split's images are looked up at ``root/<filepath>/<filename>``; when the 2014 folders are
absent the same image is taken from ``train2017/`` or ``val2017/`` by its COCO id (2017 re-used the ids).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Literal

from mmretrieve.modality import Modality

from .common import Dataset, Sample, _find_file, _first_existing, _load_json, _Problems

__all__ = ["read_coco", "COCO_SPLITS", "KARPATHY_SPLITS"]

# our split name -> the Karpathy "split" values it takes
KARPATHY_SPLITS: dict[str, tuple[str, ...]] = {
    "karpathy-test": ("test",),
    "karpathy-val": ("val",),
    "karpathy-train": ("train", "restval"),
    "karpathy-train-only": ("train",),
}
OFFICIAL_SPLITS = ("train2017", "val2017", "train2014", "val2014")
COCO_SPLITS = tuple(KARPATHY_SPLITS) + OFFICIAL_SPLITS
# evaluation protocol: 5 captions per image (5k test: 5,000 images, 25,000 captions)
_PROTOCOL_CAPTIONS = {"karpathy-test": 5, "karpathy-val": 5}
_HINT = "Expected layout: see datasets/coco.md."


def read_coco(
    root: str | os.PathLike,
    split: str = "karpathy-test",
    *,
    skip_missing: bool = False,
    karpathy_json: str | os.PathLike | None = None,
    max_captions: int | None | Literal["protocol"] = "protocol",
) -> Dataset:
    """Read a COCO captions split.

    ``split``: "karpathy-test" (5k test), "karpathy-val", "karpathy-train" (train + restval, 113,287
    images), "karpathy-train-only", or an official split "train2017", "val2017", "train2014", "val2014".
    ``max_captions``: keep at most this many captions per image; "protocol" = 5 for the Karpathy
    test/val splits (the standard 25,000-caption 5k test), all captions otherwise.
    Missing files or malformed annotations raise DatasetError listing every problem; images that are
    absent or have no captions are skipped and reported when ``skip_missing`` is true.
    """
    root = os.fspath(root)
    if split not in COCO_SPLITS:
        raise ValueError(f"split={split!r} is not a COCO split; choose one of: {', '.join(COCO_SPLITS)}")
    if max_captions == "protocol":
        max_captions = _PROTOCOL_CAPTIONS.get(split)
    elif max_captions is not None and (not isinstance(max_captions, int) or max_captions < 1):
        raise ValueError(f"max_captions={max_captions!r} must be a positive int, None or 'protocol'")
    problems = _Problems(f"COCO {split} in {root}", _HINT)
    if not os.path.isdir(root):
        problems.add(f"{root}: directory not found")
        problems.raise_fatal()
    if split in KARPATHY_SPLITS:
        samples = _read_karpathy(root, split, karpathy_json, max_captions, problems)
    else:
        samples = _read_official(root, split, max_captions, problems)
    skipped = problems.finish(skip_missing)
    return Dataset(name="coco", split=split, samples=tuple(samples), skipped=skipped)


def _trim(captions: list[str], max_captions: int | None) -> tuple[str, ...]:
    return tuple(captions if max_captions is None else captions[:max_captions])


def _read_official(root: str, split: str, max_captions: int | None, problems: _Problems) -> list[Sample]:
    ann_path = os.path.join(root, "annotations", f"captions_{split}.json")
    image_dir = os.path.join(root, split)
    data = _load_json(ann_path, problems)
    if not os.path.isdir(image_dir):
        problems.add(f"{image_dir}: image folder not found")
    problems.raise_fatal()
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        problems.add(f"{ann_path}: expected a JSON object with 'images' and 'annotations' lists")
        problems.raise_fatal()
    images: dict[int, str] = {}
    order: list[int] = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            problems.add(f"{ann_path}: images[{i}] lacks 'id' or 'file_name'")
            continue
        if img["id"] in images:
            problems.add(f"{ann_path}: images[{i}] repeats id {img['id']}")
            continue
        images[img["id"]] = str(img["file_name"])
        order.append(img["id"])
    captions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            problems.add(f"{ann_path}: annotations[{i}] lacks 'image_id' or 'caption'")
            continue
        if ann["image_id"] not in images:
            problems.add(f"{ann_path}: annotations[{i}] refers to image_id {ann['image_id']}, not in 'images'")
            continue
        captions[ann["image_id"]].append((ann.get("id", i), str(ann["caption"]).strip()))
    problems.raise_fatal()
    cache: dict = {}
    samples = []
    for image_id in order:
        name = images[image_id]
        caps = [c for _, c in sorted(captions.get(image_id, []), key=lambda t: t[0]) if c]
        path = _find_file(image_dir, name, cache)
        if path is None:
            problems.item(os.path.join(image_dir, name), "image file not found")
            continue
        if not caps:
            problems.item(path, f"image id {image_id} has no captions in {ann_path}")
            continue
        samples.append(Sample(path, Modality.IMAGE, _trim(caps, max_captions), str(image_id), {"coco_id": image_id}))
    return samples


def _karpathy_json(root: str, explicit: str | os.PathLike | None) -> tuple[str, list[str]]:
    if explicit is not None:
        return os.fspath(explicit), [os.fspath(explicit)]
    candidates = [
        os.path.join(root, "dataset_coco.json"),
        os.path.join(root, "annotations", "dataset_coco.json"),
        os.path.join(root, "karpathy", "dataset_coco.json"),
        os.path.join(root, "caption_datasets", "dataset_coco.json"),
    ]
    return _first_existing(candidates) or candidates[0], candidates


def _read_karpathy(
    root: str, split: str, explicit: str | os.PathLike | None, max_captions: int | None, problems: _Problems
) -> list[Sample]:
    path, candidates = _karpathy_json(root, explicit)
    if not os.path.isfile(path):
        problems.add(f"Karpathy split file dataset_coco.json not found; looked at: {', '.join(candidates)}")
        problems.raise_fatal()
    data = _load_json(path, problems)
    problems.raise_fatal()
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        problems.add(f"{path}: expected a JSON object with an 'images' list")
        problems.raise_fatal()
    wanted = KARPATHY_SPLITS[split]
    required = ("filepath", "filename", "split", "sentences", "cocoid")
    entries = []
    for i, img in enumerate(data["images"]):
        missing = [k for k in required if not isinstance(img, dict) or k not in img]
        if missing:
            problems.add(f"{path}: images[{i}] lacks {', '.join(missing)}")
            continue
        if img["split"] in wanted:
            entries.append((i, img))
    problems.raise_fatal()
    cache: dict = {}
    samples = []
    for i, img in entries:
        caps = []
        for j, sent in enumerate(img["sentences"]):
            if not isinstance(sent, dict) or "raw" not in sent:
                problems.add(f"{path}: images[{i}].sentences[{j}] lacks 'raw'")
                continue
            raw = str(sent["raw"]).strip()
            if raw:
                caps.append(raw)
        cocoid = img["cocoid"]
        media = _find_file(os.path.join(root, str(img["filepath"])), str(img["filename"]), cache)
        name_2017 = f"{int(cocoid):012d}.jpg" if isinstance(cocoid, int) or str(cocoid).isdigit() else None
        if media is None and name_2017:  # the same image under its 2017 name
            for folder in ("val2017", "train2017"):
                media = _find_file(os.path.join(root, folder), name_2017, cache)
                if media:
                    break
        if media is None:
            also = f" (nor as train2017/val2017/{name_2017})" if name_2017 else ""
            problems.item(
                os.path.join(root, str(img["filepath"]), str(img["filename"])), f"image file not found{also}"
            )
            continue
        if not caps:
            problems.item(media, f"no captions in {path} images[{i}]")
            continue
        meta = {"coco_id": cocoid, "karpathy_split": img["split"]}
        samples.append(Sample(media, Modality.IMAGE, _trim(caps, max_captions), str(cocoid), meta))
    problems.raise_fatal()
    return samples
