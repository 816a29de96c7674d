"""Turn a JSON search request (and its uploaded files) into the arguments of ``Retriever.search``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..modality import Modality, modality_of_path, parse_modality
from ..query import Arithmetic, Composed, Query

__all__ = ["RequestError", "Upload", "SearchArgs", "parse_search", "parse_query"]

_MAX_TERMS = 16
_MAX_BATCH = 64


class RequestError(ValueError):
    """The request is well-formed JSON but asks for something invalid (HTTP 422)."""


@dataclass(frozen=True)
class Upload:
    """An uploaded file saved to a temporary path; ``name`` is its multipart part, ``filename`` the client's."""

    name: str
    filename: str
    path: str


@dataclass(frozen=True)
class SearchArgs:
    query: Any
    modality: Any
    k: int
    where: dict | None
    dedup: float | None


def parse_search(body: Any, uploads: Mapping[str, Upload], max_k: int) -> SearchArgs:
    """Validate a search body ``{"query", "modality", "k", "where", "dedup"}``."""
    if not isinstance(body, dict):
        raise RequestError(f"the request must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - {"query", "modality", "k", "where", "dedup"})
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; expected query, modality, k, where, dedup")
    if "query" not in body:
        raise RequestError('missing "query" (e.g. {"query": {"text": "a dog"}})')
    raw = body["query"]
    if isinstance(raw, list):
        if not 1 <= len(raw) <= _MAX_BATCH:
            raise RequestError(f"a batch holds 1 to {_MAX_BATCH} queries, got {len(raw)}")
        query: Any = [parse_query(q, uploads, f"query[{i}]") for i, q in enumerate(raw)]
    else:
        query = parse_query(raw, uploads, "query")
    k = body.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise RequestError(f"k={k!r} must be an integer from 1 to {max_k}")
    modality = body.get("modality")
    if modality is not None:
        items = modality if isinstance(modality, list) else [modality]
        if not items or not all(isinstance(m, str) for m in items):
            raise RequestError(f"modality={modality!r} must be a modality name or a non-empty list of them")
        modality = [parse_modality(m).value for m in items]
    where = body.get("where")
    if where is not None and not isinstance(where, dict):
        raise RequestError(f"where must be an object {{key: value or [values]}}, got {type(where).__name__}")
    dedup = body.get("dedup")
    if dedup is not None and (isinstance(dedup, bool) or not isinstance(dedup, (int, float))
                              or not math.isfinite(dedup) or not -1.0 <= dedup <= 1.0):
        raise RequestError(f"dedup={dedup!r} must be a cosine similarity threshold in [-1, 1]")
    return SearchArgs(query, modality, k, where, None if dedup is None else float(dedup))


def parse_query(spec: Any, uploads: Mapping[str, Upload], where: str = "query") -> Any:
    """A query spec (see :mod:`mmretrieve.server.wire`) -> str, Query, Composed or Arithmetic."""
    if not isinstance(spec, dict) or len(spec) == 0:
        raise RequestError(f'{where} must be an object such as {{"text": "..."}}, got {spec!r:.80}')
    kinds = [k for k in ("text", "upload", "composed", "terms") if k in spec]
    if len(kinds) != 1:
        raise RequestError(f'{where} needs exactly one of "text", "upload", "composed", "terms"; got {sorted(spec)}')
    kind = kinds[0]
    extra = sorted(set(spec) - {kind, "modality"} if kind == "upload" else set(spec) - {kind})
    if extra:
        raise RequestError(f"{where}: unexpected field(s) {extra}")
    if kind == "text":
        text = spec["text"]
        if not isinstance(text, str) or not text.strip():
            raise RequestError(f"{where}.text must be a non-empty string")
        return Query.text(text)
    if kind == "upload":
        return _upload_query(spec, uploads, where)
    if kind == "composed":
        c = spec["composed"]
        if not isinstance(c, dict) or set(c) - {"reference", "text", "weight"} or "reference" not in c:
            raise RequestError(f'{where}.composed must be {{"reference": <upload>, "text": "...", "weight": w}}')
        ref = _upload_query(c["reference"], uploads, f"{where}.composed.reference") \
            if isinstance(c["reference"], dict) and "upload" in c["reference"] else None
        if ref is None:
            raise RequestError(f"{where}.composed.reference must be an upload spec")
        kwargs = {"text": c.get("text"), ref.modality.value: ref.value}
        if "weight" in c:
            kwargs["weight"] = c["weight"]
        try:
            return Composed(**kwargs)
        except (TypeError, ValueError) as e:
            raise RequestError(f"{where}.composed: {e}") from None
    terms = spec["terms"]
    if not isinstance(terms, list) or not 1 <= len(terms) <= _MAX_TERMS:
        raise RequestError(f"{where}.terms must be a list of 1 to {_MAX_TERMS} {{\"weight\", \"query\"}} objects")
    out = []
    for i, term in enumerate(terms):
        at = f"{where}.terms[{i}]"
        if not isinstance(term, dict) or set(term) != {"weight", "query"}:
            raise RequestError(f'{at} must be {{"weight": number, "query": <text or upload spec>}}')
        w = term["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise RequestError(f"{at}.weight={w!r} must be a finite number")
        q = parse_query(term["query"], uploads, f"{at}.query")
        if not isinstance(q, Query):
            raise RequestError(f"{at}.query must be a text or upload spec (terms do not nest)")
        out.append((float(w), q))
    try:
        return Arithmetic(tuple(out))
    except (TypeError, ValueError) as e:
        raise RequestError(f"{where}.terms: {e}") from None


def _upload_query(spec: dict, uploads: Mapping[str, Upload], where: str) -> Query:
    name = spec.get("upload")
    if not isinstance(name, str) or name not in uploads:
        have = sorted(uploads) or "none"
        raise RequestError(f"{where}.upload={name!r} names no uploaded file part (uploaded: {have})")
    up = uploads[name]
    if spec.get("modality") is not None:
        modality = parse_modality(spec["modality"], f"{where}.modality")
    else:
        modality = modality_of_path(up.filename)
        if modality is None:
            raise RequestError(f"upload {name!r} ({up.filename!r}): unknown media extension; "
                               f'say "modality": "image", "video" or "audio"')
    if modality is Modality.TEXT:
        raise RequestError(f'{where}: an upload is an image, video or audio file, not "text"')
    return Query(up.path, modality)
