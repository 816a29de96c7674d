"""The ASGI application: search, item lookup, media streaming, info, health and (opt-in) writes.

It holds one :class:`~mmretrieve.retriever.Retriever` (the encoder stays loaded) and talks to it only
through its public methods. Searches run in worker threads, at most ``concurrency`` at once; the index
serialises its own reads and writes, so a search never sees half a write.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import mimetypes
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict
from typing import Any, Callable, Iterator

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Query as QueryParam, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import MediaError
from .config import ServeConfig
from .limits import BodyLimit, BodyTooLarge
from .queries import Upload, parse_search
from .wire import hit_to_dict

__all__ = ["create_app"]

_MAX_PARTS = 16
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


class SearchBody(BaseModel):
    """``POST /search`` as JSON, or as multipart/form-data with this object in the ``request`` field
    and the uploaded files in parts named by the query's ``{"upload": NAME}`` specs."""

    query: Any = Field(description='{"text": ...} | {"upload": PART, "modality"?: ...} | {"composed": {...}} | '
                                   '{"terms": [{"weight": w, "query": spec}]} | a list of those (a batch)')
    modality: str | list[str] | None = Field(None, description="only hits of this modality (or any of these)")
    k: int = Field(10, description="number of hits")
    where: dict[str, Any] | None = Field(None, description="metadata filter {key: value or [values]}")
    dedup: float | None = Field(None, description="collapse hits more similar than this cosine to a better hit")


class HitModel(BaseModel):
    id: int
    score: float | None
    path: str | None
    modality: str
    start: float | None
    end: float | None
    metadata: dict[str, Any]
    media_url: str | None


class AddBody(BaseModel):
    paths: list[str] = Field(default_factory=list, description="files or folders on the server's disk")
    texts: list[str] = Field(default_factory=list, description="texts indexed as text entries")
    metadata: dict[str, Any] | None = None


class RemoveBody(BaseModel):
    ids: list[int] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)


class _SharedExclusive:
    """Many readers or one saver. ``Retriever.save`` checkpoints the index's SQLite WAL on the
    connection every thread shares, outside the index's own lock, so the server keeps reads out of
    the way while it saves."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._saving = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._saving)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._saving)
            self._saving = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._saving = False
                self._cond.notify_all()


def create_app(retriever: Any, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The API over ``retriever``; serve it with uvicorn (see :func:`mmretrieve.server.run.serve`)."""
    app = FastAPI(
        title="mmretrieve",
        version=__version__,
        description="Search one multimodal index by text, example files, composed and arithmetic queries.",
    )
    limiter = anyio.CapacityLimiter(config.concurrency)
    write_lock = anyio.Lock()

    guard = _SharedExclusive()

    def guarded(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with guard.shared():
                return fn()
        return run

    async def in_thread(fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(guarded(fn), abandon_on_cancel=True, limiter=limiter)

    def save() -> None:
        with guard.exclusive():
            retriever.save()

    def require_writer(request: Request) -> None:
        if not config.allow_writes:
            raise HTTPException(403, "writes are disabled on this server (start it with --allow-writes)")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "writes need 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), (config.token or "").encode()):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    # errors -------------------------------------------------------------------------------------
    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, e: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=413)

    # reading ------------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict:
        """Liveness: the index answers."""
        return {"status": "ok", "entries": await in_thread(lambda: len(retriever))}

    @app.get("/info")
    async def info() -> dict:
        """What the index holds, which encoder made it, and this server's limits."""
        out = await in_thread(retriever.info)
        out["server"] = {"writes": config.allow_writes, "max_upload_bytes": config.max_upload_bytes,
                         "timeout": config.timeout, "max_k": config.max_k}
        return out

    @app.post(
        "/search",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": SearchBody.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "request": {"type": "string", "description": "the JSON search object"}},
                "additionalProperties": {"type": "string", "format": "binary"}}},
        }}},
        responses={200: {"model": list[HitModel], "description": "hits, best first (a list of lists for a batch)"}},
    )
    async def search(request: Request) -> Any:
        """Search by text, uploaded files, composed or arithmetic queries."""
        deadline = time.monotonic() + config.timeout
        with tempfile.TemporaryDirectory(prefix="mmretrieve-upload-") as tmp:
            try:
                with anyio.fail_after(config.timeout):
                    body, uploads = await _read_search_request(request, tmp, config.max_upload_bytes)
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {config.timeout:g} s") from None
            return await _run_search(_parsed(body, uploads), uploads, deadline)

    @app.get("/search", responses={200: {"model": list[HitModel]}})
    async def search_text(q: str, k: int = 10, modality: list[str] | None = QueryParam(None),
                          dedup: float | None = None) -> Any:
        """Text search from a URL: ``/search?q=a+red+circle&k=5&modality=image``."""
        body: dict = {"query": {"text": q}, "k": k}
        if modality:
            body["modality"] = modality
        if dedup is not None:
            body["dedup"] = dedup
        return await _run_search(_parsed(body, {}), {}, time.monotonic() + config.timeout)

    def _parsed(body: Any, uploads: dict[str, Upload]) -> Any:
        try:
            return parse_search(body, uploads, config.max_k)
        except ValueError as e:  # RequestError, or an unknown modality name
            raise HTTPException(422, str(e)) from None

    async def _run_search(args, uploads: dict[str, Upload], deadline: float) -> Any:
        extra = {} if args.dedup is None else {"dedup": args.dedup}

        def run() -> Any:
            return retriever.search(args.query, modality=args.modality, k=args.k, where=args.where, **extra)

        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                hits = await in_thread(run)
        except TimeoutError:
            raise HTTPException(504, f"the search took longer than the server's {config.timeout:g} s timeout") from None
        except MediaError as e:
            by_path = {u.path: u for u in uploads.values()}
            up = by_path.get(e.path or "")
            where = f"upload {up.name!r} ({up.filename!r})" if up else (e.path or "<input>")
            raise HTTPException(422, f"{where}: cannot be read as media: {e.reason}") from None
        except ValueError as e:  # bad where filter, weights that cancel out, ...
            raise HTTPException(422, str(e)) from None
        if isinstance(args.query, list):
            return [[hit_to_dict(h) for h in row] for row in hits]
        return [hit_to_dict(h) for h in hits]

    @app.get("/items/{item_id}", response_model=HitModel)
    async def item(item_id: int) -> dict:
        """A stored entry (score null)."""
        return hit_to_dict(await _entry(item_id))

    async def _entry(item_id: int) -> Any:
        try:
            return (await in_thread(lambda: retriever.index.get([item_id])))[0]
        except KeyError:
            raise HTTPException(404, f"no entry with id {item_id}") from None

    @app.get("/media/{item_id}", response_class=FileResponse)
    async def media(item_id: int) -> FileResponse:
        """The file of an entry, with HTTP range requests (players seek to a window's start)."""
        hit = await _entry(item_id)
        if hit.path is None:
            raise HTTPException(404, f"entry {item_id} is an in-memory item and has no file")
        return _file_response(hit.path)

    @app.get("/files/{file_path:path}", response_class=FileResponse)
    async def files(file_path: str) -> FileResponse:
        """An indexed file by its absolute path (``/files/home/me/a.jpg``); nothing else is served."""
        path = "/" + file_path.lstrip("/")
        parts = path.split("/")
        if ".." in parts or "." in parts or "\x00" in path or "\\" in path or os.path.normpath(path) != path:
            raise HTTPException(400, f"{file_path!r}: path traversal is not allowed; ask for an indexed file's absolute path")
        if not await in_thread(lambda: retriever.index.entries(path)):
            raise HTTPException(404, f"{path}: not a file of this index")
        return _file_response(path)

    # writing ------------------------------------------------------------------------------------
    @app.post("/items", dependencies=[Depends(require_writer)])
    async def add(request: Request) -> dict:
        """Add server-side files/folders and texts (needs --allow-writes and the bearer token)."""
        body = _validated(AddBody, await _json_object(request))
        if not body.paths and not body.texts:
            raise HTTPException(422, 'nothing to add: give "paths" and/or "texts"')

        def run() -> dict:
            report = retriever.add(body.paths, metadata=body.metadata, progress=False) if body.paths else None
            texts = retriever.add(body.texts, modality="text", metadata=body.metadata, progress=False) if body.texts else None
            merged: dict = {"added": [], "updated": [], "unchanged": [], "failed": [], "ids": []}
            for r in (report, texts):
                if r is not None:
                    for key, value in asdict(r).items():
                        merged[key] += list(value)
            return merged

        def run_and_save() -> dict:
            with guard.shared():
                out = run()
            save()
            return out

        async with write_lock:
            try:
                return await anyio.to_thread.run_sync(run_and_save)
            except (FileNotFoundError, ValueError, TypeError) as e:
                raise HTTPException(422, str(e)) from None

    @app.post("/remove", dependencies=[Depends(require_writer)])
    async def remove(request: Request) -> dict:
        """Remove entries by id and/or every entry of indexed file paths (needs writes enabled)."""
        body = _validated(RemoveBody, await _json_object(request))

        def run() -> int:
            n = retriever.remove(body.ids) if body.ids else 0
            n += sum(retriever.remove(p) for p in body.paths)
            return n

        def run_and_save() -> int:
            with guard.shared():
                n = run()
            save()
            return n

        async with write_lock:
            return {"removed": await anyio.to_thread.run_sync(run_and_save)}

    return BodyLimit(app, config.max_upload_bytes)  # type: ignore[return-value]


def _validated(model: type[BaseModel], data: dict) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise HTTPException(422, "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                                           for err in e.errors())) from None


def _file_response(path: str) -> FileResponse:
    if not os.path.isfile(path):
        raise HTTPException(404, f"{path}: indexed, but the file is no longer there")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, content_disposition_type="inline",
                        filename=os.path.basename(path))


async def _json_object(request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


async def _read_search_request(request: Request, tmp: str, max_bytes: int) -> tuple[Any, dict[str, Upload]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype == "":
        return await _json_object(request), {}
    if ctype != "multipart/form-data":
        raise HTTPException(415, f"Content-Type {ctype!r}: send application/json or multipart/form-data")
    form = await request.form(max_files=_MAX_PARTS, max_fields=_MAX_PARTS)
    uploads: dict[str, Upload] = {}
    raw_request = None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            filename = value.filename or ""
            suffix = os.path.splitext(os.path.basename(filename))[1].lower()
            path = os.path.join(tmp, f"{len(uploads)}{suffix if _SUFFIX.match(suffix) else ''}")
            with open(path, "wb") as out:
                size = 0
                while chunk := await value.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise BodyTooLarge(max_bytes)
                    out.write(chunk)
            if size == 0:
                raise HTTPException(422, f"upload {name!r} ({filename!r}) is empty")
            uploads[name] = Upload(name, filename, path)
        elif name == "request":
            raw_request = value
        else:
            raise HTTPException(422, f"unexpected form field {name!r}; put the search in the 'request' field as JSON")
    if raw_request is None:
        raise HTTPException(422, "a multipart search needs a 'request' field holding the JSON search object")
    try:
        body = json.loads(raw_request)
    except json.JSONDecodeError as e:
        raise HTTPException(400, f"the 'request' field is not valid JSON: {e}") from None
    return body, uploads
