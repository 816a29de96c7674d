"""Clotho v2 reader: ``clotho_captions_<split>.csv`` with the matching audio folder.

Layout (see datasets/clotho.md)::

    root/clotho_captions_development.csv   file_name,caption_1,caption_2,caption_3,caption_4,caption_5
    root/clotho_captions_validation.csv
    root/clotho_captions_evaluation.csv
    root/development/*.wav  root/validation/*.wav  root/evaluation/*.wav

The audio archives (clotho_audio_<split>.7z) unpack to a ``<split>/`` folder; ``root/clotho_audio_<split>/``
and ``root/clotho_audio_<split>/<split>/`` are accepted too. File names contain spaces, commas (quoted in
the CSV) and non-ASCII characters; names are matched in either Unicode normal form.
"""
from __future__ import annotations

import os

from mmretrieve.modality import Modality

from .common import Dataset, Sample, _find_file, _first_existing, _Problems, _read_csv

__all__ = ["read_clotho", "CLOTHO_SPLITS", "CLOTHO_CAPTION_COLUMNS"]

CLOTHO_SPLITS = ("development", "validation", "evaluation")
CLOTHO_CAPTION_COLUMNS = tuple(f"caption_{i}" for i in range(1, 6))
_HINT = "Expected layout: see datasets/clotho.md."


def read_clotho(
    root: str | os.PathLike,
    split: str = "evaluation",
    *,
    skip_missing: bool = False,
    audio_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Read a Clotho v2 split: "development" (3,839 clips), "validation" (1,045), "evaluation" (1,045);
    5 captions per clip. ``audio_dir`` overrides the folder holding the split's audio files."""
    root = os.fspath(root)
    if split not in CLOTHO_SPLITS:
        raise ValueError(f"split={split!r} is not a Clotho split; choose one of: {', '.join(CLOTHO_SPLITS)}")
    problems = _Problems(f"Clotho {split} in {root}", _HINT)
    if not os.path.isdir(root):
        problems.add(f"{root}: directory not found")
        problems.raise_fatal()
    csv_path = os.path.join(root, f"clotho_captions_{split}.csv")
    rows = _read_csv(csv_path, problems, required=("file_name",) + CLOTHO_CAPTION_COLUMNS, allowed=())
    if audio_dir is not None:
        folder = os.fspath(audio_dir)
        candidates = [folder]
    else:
        candidates = [
            os.path.join(root, split),
            os.path.join(root, f"clotho_audio_{split}", split),
            os.path.join(root, f"clotho_audio_{split}"),
        ]
        folder = _first_existing(candidates, "dir") or candidates[0]
    if not os.path.isdir(folder):
        problems.add(f"audio folder for {split} not found; looked at: {', '.join(candidates)}")
    problems.raise_fatal()

    cache: dict = {}
    samples = []
    seen: set[str] = set()
    for row in rows or []:
        name = row["file_name"].strip()
        if not name:
            problems.item(csv_path, "a row has an empty file_name")
            continue
        if name in seen:
            problems.item(name, f"listed twice in {csv_path}")
            continue
        seen.add(name)
        caps = tuple(row[c].strip() for c in CLOTHO_CAPTION_COLUMNS if row[c].strip())
        path = _find_file(folder, name, cache)
        if path is None:
            problems.item(os.path.join(folder, name), "audio file not found")
            continue
        if not caps:
            problems.item(path, "all five captions are empty")
            continue
        samples.append(Sample(path, Modality.AUDIO, caps, name, {}))
    skipped = problems.finish(skip_missing)
    return Dataset(name="clotho", split=split, samples=tuple(samples), skipped=skipped)
