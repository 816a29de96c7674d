"""Small datasets in the official on-disk formats (COCO Karpathy, MSR-VTT, Clotho v2), for evaluation
and training tests and for trying ``mmretrieve eval`` without the real data.

Every item gets its own colour (images, video frames) or pitch (audio), and its captions name it, so a
trained model can tell them apart; sizes are parameters. Layouts as in ``datasets/*.md``.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from mmretrieve.media.write import write_audio, write_image, write_video

__all__ = ["make_coco_karpathy", "make_msrvtt", "make_clotho"]

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey", "brown", "pink", "teal"]


def _colour(i: int) -> np.ndarray:
    return np.random.default_rng(1000 + i).integers(0, 256, 3, dtype=np.uint8)


def _name(i: int) -> str:
    return f"{_COLOURS[i % len(_COLOURS)]} {i}"


def _write_csv(path, header, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_coco_karpathy(root, *, n_train: int = 8, n_val: int = 4, n_test: int = 6, captions: int = 5) -> str:
    """``root/dataset_coco.json`` with Karpathy train / val / test entries and their images in
    ``root/train2014`` and ``root/val2014``."""
    root = os.fspath(root)
    images = []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        cocoid = i + 1
        folder = "train2014" if split == "train" else "val2014"
        fname = f"COCO_{folder}_{cocoid:012d}.jpg"
        pixels = np.zeros((32, 32, 3), np.uint8) + _colour(i)
        pixels[4 + i % 20:10 + i % 20, 4:28] = 255 - _colour(i)
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        write_image(os.path.join(root, folder, fname), pixels)
        sentences = [{"raw": f"a {_name(i)} picture, view {j}", "tokens": [], "imgid": i, "sentid": i * 10 + j}
                     for j in range(captions)]
        images.append({"filepath": folder, "filename": fname, "imgid": i, "split": split, "cocoid": cocoid,
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    with open(os.path.join(root, "dataset_coco.json"), "w", encoding="utf-8") as f:
        json.dump({"images": images, "dataset": "coco"}, f)
    return root


def make_msrvtt(root, *, n_train: int = 6, n_test: int = 5, captions: int = 4, frames: int = 4) -> str:
    """``MSRVTT_data.json`` (``captions`` sentences per video), ``MSRVTT_train.9k.csv`` listing the train
    videos, ``MSRVTT_JSFUSION_test.csv`` with one sentence per test video, videos in ``videos/all``."""
    root = os.fspath(root)
    n = n_train + n_test
    videos = [{"video_id": f"video{i}", "split": "train" if i < n_train else "test", "id": i,
               "url": f"https://www.youtube.com/watch?v=x{i}", "category": i % 20} for i in range(n)]
    sentences = [{"video_id": f"video{i}", "caption": f"a {_name(i)} clip, sentence {j}", "sen_id": i * captions + j}
                 for i in range(n) for j in range(captions)]
    os.makedirs(os.path.join(root, "videos", "all"), exist_ok=True)
    with open(os.path.join(root, "MSRVTT_data.json"), "w", encoding="utf-8") as f:
        json.dump({"videos": videos, "sentences": sentences}, f)
    _write_csv(os.path.join(root, "MSRVTT_train.9k.csv"), ["video_id"], [[f"video{i}"] for i in range(n_train)])
    _write_csv(os.path.join(root, "MSRVTT_JSFUSION_test.csv"), ["key", "vid_key", "video_id", "sentence"],
               [[f"ret{k}", f"msr{i}", f"video{i}", f"a {_name(i)} clip, sentence 0"]
                for k, i in enumerate(range(n_train, n))])
    for i in range(n):
        clip = np.zeros((frames, 32, 32, 3), np.uint8) + _colour(i)
        for t in range(frames):
            clip[t, 8:16, (t * 5) % 24:(t * 5) % 24 + 8] = 255 - _colour(i)
        write_video(os.path.join(root, "videos", "all", f"video{i}.mp4"), clip, fps=4)
    return root


def make_clotho(root, *, n_development: int = 6, n_validation: int = 4, n_evaluation: int = 5,
                seconds: float = 1.0, rate: int = 16000) -> str:
    """``clotho_captions_<split>.csv`` (5 captions per clip) and the ``<split>/`` audio folders."""
    root = os.fspath(root)
    index = 0
    for split, n in (("development", n_development), ("validation", n_validation), ("evaluation", n_evaluation)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        rows = []
        for _ in range(n):
            name = f"{split} sound {index:03d}, take 1.wav"  # spaces and a comma, as Clotho's names have
            t = np.arange(int(seconds * rate)) / rate
            tone = 0.3 * np.sin(2 * np.pi * (220.0 * (1 + index / 4)) * t)
            write_audio(os.path.join(root, split, name), tone.astype(np.float32), rate)
            rows.append([name] + [f"a {_name(index)} sound, caption {j}" for j in range(1, 6)])
            index += 1
        _write_csv(os.path.join(root, f"clotho_captions_{split}.csv"),
                   ["file_name"] + [f"caption_{j}" for j in range(1, 6)], rows)
    return root
