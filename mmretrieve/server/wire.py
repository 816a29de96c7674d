"""The JSON forms of hits and queries, the one place server and client agree on.

A hit is ``{"id", "score", "path", "modality", "start", "end", "metadata", "media_url"}`` (``score``
is null for a stored entry looked up by id). A query spec is one of::

    {"text": "a red circle"}
    {"upload": "file0", "modality": "image"}        # a multipart part; modality from its file name if absent
    {"composed": {"reference": <upload spec>, "text": "but blue", "weight": 0.5}}
    {"terms": [{"weight": 1.0, "query": <spec>}, {"weight": -1.0, "query": <spec>}]}

Scores travel as JSON numbers written with Python's shortest round-trip repr, so a client rebuilds
exactly the float the server's search returned.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..index import Hit
from ..modality import parse_modality

__all__ = ["hit_to_dict", "hit_from_dict", "media_url"]


def media_url(hit: Hit) -> str | None:
    """Where the server streams the hit's file; a window adds a media fragment (#t=start,end) players seek to."""
    if hit.path is None:
        return None
    url = f"/media/{hit.id}"
    if hit.start is not None and hit.end is not None:
        url += f"#t={hit.start:g},{hit.end:g}"
    return url


def hit_to_dict(hit: Hit) -> dict:
    score = None if hit.score is None or math.isnan(hit.score) else float(hit.score)
    return {
        "id": int(hit.id),
        "score": score,
        "path": hit.path,
        "modality": hit.modality.value,
        "start": hit.start,
        "end": hit.end,
        "metadata": hit.metadata,
        "media_url": media_url(hit),
    }


def hit_from_dict(data: Mapping[str, Any]) -> Hit:
    score = data.get("score")
    return Hit(
        id=int(data["id"]),
        score=math.nan if score is None else float(score),
        path=data.get("path"),
        modality=parse_modality(data["modality"], "hit.modality"),
        start=data.get("start"),
        end=data.get("end"),
        metadata=dict(data.get("metadata") or {}),
    )
