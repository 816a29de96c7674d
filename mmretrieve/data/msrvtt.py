"""MSR-VTT reader: ``MSRVTT_data.json``, the 9k/7k train lists and the 1k-A test file.

Layout (see datasets/msrvtt.md)::

    root/MSRVTT_data.json          {"videos": [{"video_id": "video0", "split": "train"|"validate"|"test", ...}],
                                    "sentences": [{"video_id": "video0", "caption": "...", "sen_id": 0}]}
    root/MSRVTT_train.9k.csv       column video_id (9,000 videos)
    root/MSRVTT_train.7k.csv       column video_id (7,010 videos)
    root/MSRVTT_JSFUSION_test.csv  columns key,vid_key,video_id,sentence (1,000 video-sentence pairs)
    root/videos/all/video0.mp4 ... (or root/videos/, root/MSRVTT_Videos/, root/TrainValVideo/ + TestVideo/)

The annotation files may also sit in ``root/msrvtt_data/`` (the name of the archive they ship in).
"""
from __future__ import annotations

import os
from collections import defaultdict

from mmretrieve.modality import VIDEO_EXTS, Modality

from .common import Dataset, Sample, _load_json, _Problems, _read_csv

__all__ = ["read_msrvtt", "MSRVTT_SPLITS"]

_CSV_SPLITS = {"train-9k": "MSRVTT_train.9k.csv", "train-7k": "MSRVTT_train.7k.csv"}
_JSON_SPLITS = {"full-train": "train", "full-val": "validate", "full-test": "test"}
MSRVTT_SPLITS = ("1k-A",) + tuple(_CSV_SPLITS) + tuple(_JSON_SPLITS)
_ANN_DIRS = ("", "msrvtt_data", "annotation", "annotations")
_VIDEO_DIRS = (
    os.path.join("videos", "all"),
    "videos",
    "MSRVTT_Videos",
    "TrainValVideo",
    "TestVideo",
    "compressed_videos",
    "",
)
_HINT = "Expected layout: see datasets/msrvtt.md."


def read_msrvtt(
    root: str | os.PathLike,
    split: str = "1k-A",
    *,
    skip_missing: bool = False,
    video_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Read an MSR-VTT split.

    ``split``: "1k-A" (JSFusion 1,000 video-sentence pairs: one caption per video), "train-9k" /
    "train-7k" (all 20 captions of each listed video), "full-train" / "full-val" / "full-test" (the
    official 6,513 / 497 / 2,990-video splits of MSRVTT_data.json). ``video_dir`` overrides where the
    ``videoN.mp4`` files are looked up.
    """
    root = os.fspath(root)
    if split not in MSRVTT_SPLITS:
        raise ValueError(f"split={split!r} is not an MSR-VTT split; choose one of: {', '.join(MSRVTT_SPLITS)}")
    problems = _Problems(f"MSR-VTT {split} in {root}", _HINT)
    if not os.path.isdir(root):
        problems.add(f"{root}: directory not found")
        problems.raise_fatal()
    videos = _VideoFinder(root, video_dir, problems)

    if split == "1k-A":
        path = _ann_path(root, "MSRVTT_JSFUSION_test.csv")
        rows = _read_csv(path, problems, required=("key", "vid_key", "video_id", "sentence"), allowed=())
        problems.raise_fatal()
        pairs = [(r["video_id"].strip(), r["sentence"].strip()) for r in rows or []]
        meta_of = {r["video_id"].strip(): {"key": r["key"], "vid_key": r["vid_key"]} for r in rows or []}
    else:
        data_path = _ann_path(root, "MSRVTT_data.json")
        data = _load_json(data_path, problems)
        wanted_ids: list[str] | None = None
        if split in _CSV_SPLITS:
            list_path = _ann_path(root, _CSV_SPLITS[split])
            rows = _read_csv(list_path, problems, required=("video_id",), allowed=())
            wanted_ids = [r["video_id"].strip() for r in rows or []]
        problems.raise_fatal()
        by_video = _sentences(data, data_path, problems)
        if wanted_ids is None:
            wanted_ids = [
                str(v["video_id"])
                for v in data.get("videos", [])
                if isinstance(v, dict) and v.get("split") == _JSON_SPLITS[split]
            ]
        problems.raise_fatal()
        pairs = []
        for vid in wanted_ids:
            caps = by_video.get(vid)
            if not caps:
                problems.item(vid, f"no sentences for this video in {data_path}")
                continue
            pairs.extend((vid, c) for c in caps)
        meta_of = {}

    captions: dict[str, list[str]] = defaultdict(list)
    order: list[str] = []
    for vid, cap in pairs:
        if vid not in captions:
            order.append(vid)
        if cap:
            captions[vid].append(cap)
    samples = []
    for vid in order:
        path = videos.find(vid)
        if path is None:
            problems.item(vid, f"video file {vid}.mp4 not found in {videos.describe()}")
            continue
        if not captions[vid]:
            problems.item(path, "empty caption")
            continue
        samples.append(Sample(path, Modality.VIDEO, tuple(captions[vid]), vid, dict(meta_of.get(vid, {}))))
    skipped = problems.finish(skip_missing)
    return Dataset(name="msrvtt", split=split, samples=tuple(samples), skipped=skipped)


def _ann_path(root: str, name: str) -> str:
    for sub in _ANN_DIRS:
        p = os.path.join(root, sub, name)
        if os.path.isfile(p):
            return p
    return os.path.join(root, name)


def _sentences(data: object, path: str, problems: _Problems) -> dict[str, list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(
        data.get("sentences"), list
    ):
        problems.add(f"{path}: expected a JSON object with 'videos' and 'sentences' lists")
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            problems.add(f"{path}: sentences[{i}] lacks 'video_id' or 'caption'")
            continue
        cap = str(s["caption"]).strip()
        if cap:
            out[str(s["video_id"])].append(cap)
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict) or "video_id" not in v or "split" not in v:
            problems.add(f"{path}: videos[{i}] lacks 'video_id' or 'split'")
    return out


class _VideoFinder:
    """Maps ``videoN`` to a file in the first folder holding it (``.mp4`` preferred)."""

    def __init__(self, root: str, video_dir: str | os.PathLike | None, problems: _Problems):
        if video_dir is not None:
            dirs = [os.fspath(video_dir)]
            if not os.path.isdir(dirs[0]):
                problems.add(f"video_dir={dirs[0]!r}: directory not found")
        else:
            dirs = [os.path.join(root, d) for d in _VIDEO_DIRS if os.path.isdir(os.path.join(root, d))]
        self.dirs = dirs
        self._index: dict[str, str] | None = None

    def _build(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for d in self.dirs:
            try:
                names = sorted(os.listdir(d), key=lambda n: (os.path.splitext(n)[1].lower() != ".mp4", n))
            except OSError:
                continue
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTS and stem not in index:
                    path = os.path.join(d, name)
                    if os.path.isfile(path):
                        index[stem] = path
        return index

    def find(self, video_id: str) -> str | None:
        if self._index is None:
            self._index = self._build()
        return self._index.get(video_id)

    def describe(self) -> str:
        return ", ".join(self.dirs) if self.dirs else "(no video folder found)"
