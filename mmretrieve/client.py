"""A client of ``mmretrieve serve``: the same ``search`` arguments and the same ``Hit`` objects as ``Retriever``.

    client = mmretrieve.Client("http://127.0.0.1:8000")
    client.search("a red circle", modality="image", k=5)
    client.search(pathlib.Path("photo.jpg"))                      # the file is uploaded
    client.search(Composed(image="photo.jpg", text="but at night"))

Only the standard library is used (urllib), so the client needs none of the server's extras.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Mapping, Sequence

from .errors import RequestRejectedError, ServerError
from .index import Hit
from .modality import Modality, parse_modality
from .query import Arithmetic, Composed, Query
from .server.wire import hit_from_dict

__all__ = ["Client"]


class Client:
    """Talk to one server. ``token`` is the bearer token for ``add``/``remove`` on a server with writes enabled."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"url={url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # reading ------------------------------------------------------------------------------------
    def search(
        self,
        query: Any,
        *,
        modality: str | Modality | Sequence[str | Modality] | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        dedup: float | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """As :meth:`mmretrieve.Retriever.search`; files named by queries are uploaded."""
        files: list[tuple[str, str, bytes]] = []
        batch = isinstance(query, list)
        if batch and not query:
            return []
        spec = [_spec(q, files) for q in query] if batch else _spec(query, files)
        body: dict[str, Any] = {"query": spec, "k": k}
        if modality is not None:
            items = [modality] if isinstance(modality, (str, Modality)) else list(modality)
            body["modality"] = [parse_modality(m).value for m in items]
        if where is not None:
            body["where"] = dict(where)
        if dedup is not None:
            body["dedup"] = dedup
        if files:
            data, ctype = _multipart(body, files)
            out = self._request("POST", "/search", data, ctype)
        else:
            out = self._request("POST", "/search", json.dumps(body).encode(), "application/json")
        if batch:
            return [[hit_from_dict(h) for h in row] for row in out]
        return [hit_from_dict(h) for h in out]

    def get(self, item_id: int) -> Hit:
        """A stored entry by id (score NaN, as ``UnifiedIndex.get``)."""
        return hit_from_dict(self._request("GET", f"/items/{int(item_id)}"))

    def info(self) -> dict:
        return self._request("GET", "/info")

    def health(self) -> dict:
        return self._request("GET", "/health")

    def media_url(self, hit: Hit) -> str | None:
        """Absolute URL streaming the hit's file (with a #t=start,end fragment for a window)."""
        return None if hit.path is None else f"{self.url}/media/{hit.id}" + (
            f"#t={hit.start:g},{hit.end:g}" if hit.start is not None and hit.end is not None else "")

    # writing ------------------------------------------------------------------------------------
    def add(self, paths: Sequence[str] = (), *, texts: Sequence[str] = (), metadata: Mapping[str, Any] | None = None) -> dict:
        """Index files or folders on the server's disk and texts; returns the add report as a dict."""
        body = {"paths": [os.fspath(p) for p in paths], "texts": list(texts), "metadata": dict(metadata or {}) or None}
        return self._request("POST", "/items", json.dumps(body).encode(), "application/json")

    def remove(self, ids: Sequence[int] = (), *, paths: Sequence[str] = ()) -> int:
        body = {"ids": [int(i) for i in ids], "paths": [os.fspath(p) for p in paths]}
        return int(self._request("POST", "/remove", json.dumps(body).encode(), "application/json")["removed"])

    # transport ----------------------------------------------------------------------------------
    def _request(self, method: str, route: str, data: bytes | None = None, ctype: str | None = None) -> Any:
        url = self.url + route
        req = urllib.request.Request(url, data=data, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", e.reason)
            except (ValueError, AttributeError):
                detail = str(e.reason)
            error = RequestRejectedError if 400 <= e.code < 500 else ServerError
            raise error(url, e.code, detail if isinstance(detail, str) else json.dumps(detail)) from None


def _spec(query: Any, files: list[tuple[str, str, bytes]]) -> dict:
    """The wire spec of a query; files to upload are appended to ``files`` as (part, filename, bytes)."""
    if isinstance(query, str):
        if not query.strip():
            raise ValueError("empty text query")
        return {"text": query}
    if isinstance(query, pathlib.PurePath):
        return _upload(os.fspath(query), None, files)
    if isinstance(query, Query):
        if query.modality is Modality.TEXT:
            return {"text": query.value}
        return _upload(query.value, query.modality, files)
    if isinstance(query, Composed):
        ref = _upload(query.reference.value, query.reference.modality, files)
        return {"composed": {"reference": ref, "text": query.text, "weight": query.weight}}
    if isinstance(query, Arithmetic):
        return {"terms": [{"weight": w, "query": _spec(q, files)} for w, q in query.terms]}
    raise TypeError(f"cannot send a {type(query).__name__} query to a server: use text, a pathlib.Path, "
                    "Query.image/video/audio(path or PIL image), Composed or Arithmetic")


def _upload(value: Any, modality: Modality | None, files: list[tuple[str, str, bytes]]) -> dict:
    part = f"file{len(files)}"
    if isinstance(value, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(value))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: query file not found")
        with open(path, "rb") as f:
            data = f.read()
        filename = os.path.basename(path)
    elif hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image: sent losslessly as PNG
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data, filename = buf.getvalue(), "image.png"
    else:
        raise TypeError(f"cannot upload a {type(value).__name__}: pass a file path (or a PIL image)")
    files.append((part, filename, data))
    spec: dict = {"upload": part}
    if modality is not None:
        spec["modality"] = modality.value
    return spec


def _multipart(body: dict, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n'
              f"Content-Type: application/json\r\n\r\n".encode())
    out.write(json.dumps(body).encode() + b"\r\n")
    for part, filename, data in files:
        safe = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="{safe}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
