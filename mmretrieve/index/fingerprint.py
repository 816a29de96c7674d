"""Encoder fingerprints of an index: canonical JSON form and the keys where two of them differ."""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["canonical_fingerprint", "fingerprint_difference"]


def canonical_fingerprint(fingerprint: Any) -> dict:
    """The fingerprint as it is stored (keys sorted, JSON types only); ValueError if it can't be."""
    if not isinstance(fingerprint, Mapping):
        raise ValueError(f"fingerprint must be a dict, got {type(fingerprint).__name__}")
    try:
        return json.loads(json.dumps(dict(fingerprint), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fingerprint must be JSON-serialisable ({exc})") from None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def fingerprint_difference(given: Any, stored: Mapping) -> str | None:
    """None when ``given`` equals the ``stored`` (canonical) fingerprint, else the differing keys
    with both values ("key: index=... given=..."; the first eight, and how many more)."""
    mine, theirs = _flatten(stored), _flatten(canonical_fingerprint(given))
    diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k, "<absent>") != mine.get(k, "<absent>"))
    if not diff:
        return None
    details = "; ".join(f"{k}: index={mine.get(k, '<absent>')!r} given={theirs.get(k, '<absent>')!r}"
                        for k in diff[:8])
    return details + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
