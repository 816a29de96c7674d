"""Search filters turned into parameterised SQL (never string-built from user values).

`where` is {key: value} equality on user metadata; a list/tuple/set value means "any of" (IN).
Keys are bound as JSON paths ('$."key"') through parameters, so neither keys nor values ever become
SQL text. Type-aware: True does not match 1, "1" does not match 1, None matches JSON null.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ..modality import Modality, parse_modality

__all__ = ["normalize_modalities", "build_filter", "MAX_FILTER_KEY_LENGTH"]

MAX_FILTER_KEY_LENGTH = 256


def normalize_modalities(modality: Any) -> tuple[str, ...] | None:
    """None -> None (no filter); a Modality/str or a sequence of them -> tuple of modality values."""
    if modality is None:
        return None
    if isinstance(modality, (str, Modality)):
        return (parse_modality(modality).value,)
    try:
        items = list(modality)
    except TypeError:
        raise ValueError(f"modality={modality!r} must be a modality name or a sequence of them") from None
    if not items:
        raise ValueError("modality=[] selects nothing; pass None for every modality")
    return tuple(dict.fromkeys(parse_modality(m).value for m in items))


def _json_path(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"where key {key!r} must be a non-empty string")
    if len(key) > MAX_FILTER_KEY_LENGTH:
        raise ValueError(f"where key {key[:32]!r}... is longer than {MAX_FILTER_KEY_LENGTH} characters")
    if any(c in key for c in '"\\') or any(ord(c) < 32 for c in key):
        raise ValueError(f"where key {key!r} must not contain quotes, backslashes or control characters")
    return f'$."{key}"'


def _value_clause(path: str, values: Iterable[Any], key: str) -> tuple[str, list]:
    """OR of type-exact equality tests of one JSON path against several values."""
    strings, numbers, bools, nulls = [], [], [], False
    for v in values:
        if v is None:
            nulls = True
        elif isinstance(v, bool):
            bools.append("true" if v else "false")
        elif isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"where[{key!r}]={v!r}: NaN/inf can never match stored JSON")
            numbers.append(v)
        elif isinstance(v, str):
            if "\x00" in v:
                raise ValueError(f"where[{key!r}]={v!r}: metadata strings never hold NUL characters")
            strings.append(v)
        else:
            raise ValueError(
                f"where[{key!r}] value {v!r} of type {type(v).__name__} is not supported; "
                "use str, int, float, bool, None or a list of them")
    parts: list[str] = []
    params: list[Any] = []
    if strings:
        marks = ",".join("?" * len(strings))
        parts.append(f"(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) IN ({marks}))")
        params += [path, path, *strings]
    if numbers:
        marks = ",".join("?" * len(numbers))
        parts.append(
            f"(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) IN ({marks}))")
        params += [path, path, *numbers]
    if bools:
        marks = ",".join("?" * len(bools))
        parts.append(f"(json_type(metadata, ?) IN ({marks}))")
        params += [path, *bools]
    if nulls:
        parts.append("(json_type(metadata, ?) = 'null')")
        params.append(path)
    if not parts:
        return "0", []  # empty list of values matches nothing
    return "(" + " OR ".join(parts) + ")", params


def build_filter(modality: Any = None, where: Mapping | None = None) -> tuple[str, list] | None:
    """SQL boolean expression over the items table plus its parameters, or None when unfiltered."""
    clauses: list[str] = []
    params: list[Any] = []
    mods = normalize_modalities(modality)
    if mods is not None:
        clauses.append(f"modality IN ({','.join('?' * len(mods))})")
        params += list(mods)
    if where:
        if not isinstance(where, Mapping):
            raise ValueError(f"where={where!r} must be a mapping of metadata key -> value")
        for key, value in where.items():
            path = _json_path(key)
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            clause, p = _value_clause(path, values, key)
            clauses.append(clause)
            params += p
    if not clauses:
        return None
    return " AND ".join(clauses), params
