"""Generic manifest reader for users' own data: CSV or JSONL listing media files and their captions.

Columns / keys (see datasets/manifest.md):

- ``path`` (required): the media file, relative to the manifest's folder (or absolute);
- ``caption`` (one string) and/or ``captions`` (a JSON list, or one string of captions joined by ``|``);
- ``modality`` (optional): image, video or audio; otherwise the file extension decides;
- ``id`` (optional): the item id, default the path as written; ``metadata`` (optional): a JSON object.

Rows naming the same path are merged (a CSV with one row per caption works). Unknown columns are an error,
so a typo ("captoin") is reported rather than silently ignored.
"""
from __future__ import annotations

import json
import os
from typing import Any

from mmretrieve.modality import Modality, modality_of_path

from .common import Dataset, Sample, _Problems, _read_csv

__all__ = ["read_manifest", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ("path", "caption", "captions", "modality", "id", "metadata")
_HINT = "Manifest format: see datasets/manifest.md."


def read_manifest(
    path: str | os.PathLike,
    *,
    skip_missing: bool = False,
    require_captions: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a CSV (``.csv``/``.tsv``) or JSONL (``.jsonl``/``.ndjson``/``.json`` with one object per line)
    manifest into a Dataset whose split is "manifest". Problems are listed all at once (DatasetError);
    with ``skip_missing`` absent files and uncaptioned rows are skipped and reported instead."""
    path = os.fspath(path)
    problems = _Problems(f"manifest {path}", _HINT)
    if not os.path.isfile(path):
        problems.add(f"{path}: file not found")
        problems.raise_fatal()
    base = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        rows = _read_jsonl(path, problems)
    elif ext in (".csv", ".tsv"):
        rows = _read_table(path, problems, ext)
    else:
        problems.add(f"{path}: unknown manifest extension {ext!r}; use .csv, .tsv, .jsonl or .ndjson")
        rows = []
    problems.raise_fatal()

    merged: dict[str, dict[str, Any]] = {}
    for where, row in rows:
        entry = _parse_row(where, row, problems)
        if entry is None:
            continue
        rel = entry["path"]
        if rel in merged:
            prev = merged[rel]
            prev["captions"].extend(c for c in entry["captions"] if c not in prev["captions"])
            for key in ("modality", "id"):
                if entry[key] is not None and prev[key] is not None and entry[key] != prev[key]:
                    problems.add(f"{where}: {key} {entry[key]!r} disagrees with an earlier row for {rel}")
            prev["metadata"].update(entry["metadata"])
        else:
            merged[rel] = entry
    problems.raise_fatal()

    samples = []
    for rel, entry in merged.items():
        full = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(base, rel))
        modality = entry["modality"] or modality_of_path(full)
        if modality is None:
            problems.item(full, "unknown media type: give a 'modality' column or a known file extension")
            continue
        if not os.path.isfile(full):
            problems.item(full, "media file not found")
            continue
        if require_captions and not entry["captions"]:
            problems.item(full, "no captions")
            continue
        item_id = entry["id"] if entry["id"] is not None else rel
        samples.append(Sample(full, modality, tuple(entry["captions"]), item_id, entry["metadata"]))
    skipped = problems.finish(skip_missing)
    return Dataset(name=name or os.path.splitext(os.path.basename(path))[0], split="manifest",
                   samples=tuple(samples), skipped=skipped)


def _read_jsonl(path: str, problems: _Problems) -> list[tuple[str, dict]]:
    rows = []
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        problems.add(f"{path}: not valid UTF-8 ({e})")
        return []
    items: list[tuple[str, Any]] = []
    whole = "\n".join(lines).strip()
    if whole.startswith("["):  # a .json file holding one list of objects
        try:
            items = [(f"{path}, item {i}", obj) for i, obj in enumerate(json.loads(whole))]
        except json.JSONDecodeError as e:
            problems.add(f"{path}: not a valid JSON list ({e.msg})")
            return []
    else:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append((f"{path}, line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                problems.add(f"{path}, line {lineno}: not valid JSON ({e.msg})")
    for where, obj in items:
        if not isinstance(obj, dict):
            problems.add(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        unknown = [k for k in obj if k not in MANIFEST_COLUMNS]
        if unknown:
            problems.add(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(MANIFEST_COLUMNS)}")
            continue
        rows.append((where, obj))
    return rows


def _read_table(path: str, problems: _Problems, ext: str) -> list[tuple[str, dict]]:
    delimiter = "\t" if ext == ".tsv" else ","
    table = _read_csv(path, problems, required=("path",), allowed=MANIFEST_COLUMNS, delimiter=delimiter)
    if table is None:
        return []
    return [(f"{path}, row {i}", row) for i, row in enumerate(table, start=2)]


def _split_captions(value: Any, where: str, problems: _Problems) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(c, str) for c in value):
            problems.add(f"{where}: 'captions' must be a list of strings")
            return None
        return [c.strip() for c in value if c.strip()]
    if not isinstance(value, str):
        problems.add(f"{where}: 'captions' must be a list or a string, got {type(value).__name__}")
        return None
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            problems.add(f"{where}: 'captions' starts with '[' but is not a JSON list")
            return None
        return _split_captions(parsed, where, problems)
    return [c.strip() for c in text.split("|") if c.strip()]


def _parse_row(where: str, row: dict, problems: _Problems) -> dict[str, Any] | None:
    raw_path = row.get("path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        problems.add(f"{where}: empty or missing 'path'")
        return None
    captions: list[str] = []
    single = row.get("caption")
    if single is not None:
        if not isinstance(single, str):
            problems.add(f"{where}: 'caption' must be a string")
            return None
        if single.strip():
            captions.append(single.strip())
    more = _split_captions(row.get("captions"), where, problems)
    if more is None:
        return None
    captions.extend(c for c in more if c not in captions)
    modality = None
    if row.get("modality") not in (None, ""):
        try:
            modality = Modality(str(row["modality"]).strip().lower())
        except ValueError:
            modality = None
        if modality is None or modality is Modality.TEXT:
            problems.add(f"{where}: modality {row['modality']!r} is not image, video or audio")
            return None
    metadata: dict = {}
    if row.get("metadata") not in (None, ""):
        meta = row["metadata"]
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except json.JSONDecodeError:
                problems.add(f"{where}: 'metadata' is not valid JSON")
                return None
        if not isinstance(meta, dict):
            problems.add(f"{where}: 'metadata' must be a JSON object")
            return None
        metadata = dict(meta)
    item_id = row.get("id")
    item_id = None if item_id in (None, "") else str(item_id)
    return {"path": raw_path.strip(), "captions": captions, "modality": modality, "id": item_id,
            "metadata": metadata}
