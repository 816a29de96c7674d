"""Near-duplicate files in an index, and collapsing near-identical hits of a search.

Two entries are near-duplicates when the cosine similarity of their vectors is at least the threshold.
Candidates come from a faiss range search over the stored vectors of each modality (no Python loop
over pairs); entries are grouped by file (a long video's windows are one file), and files linked by
any near-duplicate pair form one group (union-find).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import faiss
import numpy as np

from .index import Hit
from .media.video import VideoSampling, iter_video_clips
from .modality import Modality, parse_modality

__all__ = [
    "DEFAULT_DUPLICATE_THRESHOLD",
    "DuplicateItem",
    "DuplicateGroup",
    "find_duplicates",
    "collapse_hits",
    "dedup_search",
    "write_csv",
    "write_json",
    "write_html",
]

#: Cosine similarity at or above which two items are called near-duplicates. Chosen with
#: benchmarks/bench_duplicates.py on the ``sample`` preset (table in the README): the lowest threshold
#: of the sweep at which no two distinct originals were grouped; JPEG, resized, re-compressed and
#: re-encoded copies are still found (recall >= 0.98), 6%-cropped ones only 42% of the time.
DEFAULT_DUPLICATE_THRESHOLD = 0.97

_QUERY_CHUNK = 4096


@dataclass(frozen=True)
class DuplicateItem:
    """One file (or in-memory entry) of a group; ``similarity`` is its best match with another member."""

    path: str | None
    id: int  # the entry that made the best match (a window of a long file)
    modality: Modality
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical items of one modality, best-linked first."""

    modality: Modality
    items: tuple[DuplicateItem, ...]

    @property
    def similarity(self) -> float:
        """The weakest link that holds the group together (>= the threshold)."""
        return min(i.similarity for i in self.items)


def find_duplicates(index: Any, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                    modality: str | Modality | Sequence[str | Modality] | None = None) -> list[DuplicateGroup]:
    """Groups of near-duplicate files in ``index`` (any object with ``iter_vectors`` and ``get``).

    Windows of one file never pair with each other. Groups come sorted by size, then similarity.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} must be a cosine similarity in [-1, 1]")
    wanted = None
    if modality is not None:
        items = [modality] if isinstance(modality, (str, Modality)) else list(modality)
        wanted = {parse_modality(m) for m in items}
    ids_parts, vec_parts = [], []
    for ids, vecs in index.iter_vectors():
        ids_parts.append(np.asarray(ids, dtype=np.int64))
        vec_parts.append(np.ascontiguousarray(vecs, dtype=np.float32))
    if not ids_parts:
        return []
    all_ids = np.concatenate(ids_parts)
    all_vecs = np.concatenate(vec_parts)
    entries = {h.id: h for chunk in _chunks(all_ids.tolist(), 8192) for h in index.get(chunk)}
    groups: list[DuplicateGroup] = []
    for mod in Modality:
        if wanted is not None and mod not in wanted:
            continue
        rows = np.array([i for i, eid in enumerate(all_ids.tolist()) if entries[eid].modality is mod], dtype=np.int64)
        if len(rows) < 2:
            continue
        groups += _groups_of(mod, all_ids[rows], all_vecs[rows], entries, float(threshold))
    groups.sort(key=lambda g: (-len(g.items), -g.similarity, g.items[0].path or ""))
    return groups


def _groups_of(mod: Modality, ids: np.ndarray, vecs: np.ndarray, entries: dict, threshold: float) -> list[DuplicateGroup]:
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    keys = [_key(entries[int(i)]) for i in ids]  # the file an entry belongs to
    key_ids = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    node = np.array([key_ids[k] for k in keys], dtype=np.int64)
    parent = list(range(len(key_ids)))
    best: dict[int, tuple[float, int]] = {}  # node -> (best similarity to another file, entry id)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # faiss keeps results with similarity > radius for inner product; step just below the threshold
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    for start in range(0, len(vecs), _QUERY_CHUNK):
        lims, sims, found = flat.range_search(vecs[start:start + _QUERY_CHUNK], radius)
        for q in range(len(lims) - 1):
            a = node[start + q]
            for s, j in zip(sims[lims[q]:lims[q + 1]], found[lims[q]:lims[q + 1]]):
                b = node[j]
                if a == b or s < threshold:
                    continue
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                s = float(s)
                if s > best.get(a, (-math.inf, 0))[0]:
                    best[a] = (s, int(ids[start + q]))
    members: dict[int, list[DuplicateItem]] = {}
    for n, (s, eid) in best.items():
        hit = entries[eid]
        members.setdefault(find(n), []).append(DuplicateItem(hit.path, eid, mod, min(s, 1.0)))
    return [DuplicateGroup(mod, tuple(sorted(m, key=lambda i: (-i.similarity, i.path or "", i.id))))
            for m in members.values() if len(m) > 1]


def _key(hit: Hit) -> Any:
    return ("path", hit.path) if hit.path is not None else ("id", hit.id)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------- search-time dedup


def collapse_hits(hits: Sequence[Hit], vectors: np.ndarray, threshold: float) -> list[Hit]:
    """Drop every hit at least ``threshold`` similar to a better-ranked hit that was kept (greedy, rank order)."""
    kept: list[int] = []
    for i in range(len(hits)):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) < threshold:
            kept.append(i)
    return [hits[i] for i in kept]


def dedup_search(index: Any, queries: np.ndarray, k: int, threshold: float, *, modality: Any = None,
                 where: Any = None) -> list[list[Hit]]:
    """Top-``k`` hits per query after collapsing near-identical ones; widens the search until k survive
    or every matching entry has been seen."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"dedup={threshold!r} must be a cosine similarity in [-1, 1]")
    out = []
    for q in np.asarray(queries, dtype=np.float32):
        fetch = max(4 * k, k + 16)
        while True:
            hits = index.search(q[None, :], fetch, modality=modality, where=where)[0]
            kept = collapse_hits(hits, index.vectors([h.id for h in hits]), float(threshold)) if hits else []
            if len(kept) >= k or len(hits) < fetch:
                break
            fetch *= 4
        out.append(kept[:k])
    return out


# --------------------------------------------------------------------------- reports


def _rows(groups: Sequence[DuplicateGroup]) -> Iterable[dict]:
    for g, group in enumerate(groups, 1):
        for item in group.items:
            yield {"group": g, "modality": item.modality.value, "path": item.path, "id": item.id,
                   "similarity": round(item.similarity, 6)}


def write_csv(groups: Sequence[DuplicateGroup], out: io.TextIOBase) -> None:
    """One row per item: group, modality, path, id, similarity."""
    writer = csv.DictWriter(out, fieldnames=["group", "modality", "path", "id", "similarity"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(_rows(groups))


def write_json(groups: Sequence[DuplicateGroup], out: io.TextIOBase, threshold: float) -> None:
    """{"threshold": T, "groups": [{"modality", "similarity", "items": [{path, id, similarity}]}]}."""
    doc = {"threshold": threshold, "groups": [
        {"modality": g.modality.value, "similarity": round(g.similarity, 6),
         "items": [{"path": i.path, "id": i.id, "similarity": round(i.similarity, 6)} for i in g.items]}
        for g in groups]}
    json.dump(doc, out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_html(groups: Sequence[DuplicateGroup], out: io.TextIOBase, threshold: float, thumb: int = 160) -> None:
    """A self-contained page: one row of thumbnails per group (images and video frames embedded as JPEG)."""
    out.write("<!doctype html><meta charset='utf-8'><title>Near-duplicates</title>\n<style>"
              "body{font-family:sans-serif}figure{display:inline-block;margin:6px;width:%dpx;vertical-align:top}"
              "figcaption{font-size:11px;word-break:break-all}section{border-top:1px solid #ccc;padding:6px}"
              "</style>\n" % (thumb + 4))
    out.write(f"<h1>{len(groups)} group(s) of near-duplicates (cosine &ge; {threshold:g})</h1>\n")
    for g, group in enumerate(groups, 1):
        out.write(f"<section><h2>Group {g}: {len(group.items)} {group.modality.value} item(s), "
                  f"similarity &ge; {group.similarity:.4f}</h2>\n")
        for item in group.items:
            out.write(f"<figure>{_thumbnail(item, thumb)}<figcaption>{html.escape(item.path or f'<entry {item.id}>')}"
                      f" ({item.similarity:.4f})</figcaption></figure>\n")
        out.write("</section>\n")


def _thumbnail(item: DuplicateItem, size: int) -> str:
    from PIL import Image

    if item.path is None:
        return ""
    try:
        if item.modality is Modality.IMAGE:
            with Image.open(item.path) as im:
                picture = im.convert("RGB")
        elif item.modality is Modality.VIDEO:
            clip = next(iter_video_clips(item.path, VideoSampling(num_frames=1, window=None)))
            picture = Image.fromarray(clip.frames[0])
        else:
            src = "file://" + html.escape(item.path)
            return f"<audio controls preload='none' src='{src}' style='width:{size}px'></audio>"
        picture.thumbnail((size, size))
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=80)
        return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
    except Exception as e:  # a file gone or unreadable since indexing: the page still renders
        return f"<div>(no preview: {html.escape(type(e).__name__)})</div>"
