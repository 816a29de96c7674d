"""What the demo's buttons do, without Gradio: run a query on a retriever and render the hits.

Every handler returns a :class:`SearchResult`; nothing raises into the web page. Errors a user can
cause (bad upload, unknown extension, empty text, file too large) become a one-line message; anything
unexpected is logged on the server with its traceback and shown in the page as a short sentence.
"""
from __future__ import annotations

import html
import logging
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import MMRError
from ..modality import Modality, modality_of_path

__all__ = [
    "FILE_ROUTE",
    "SearchResult",
    "DemoBackend",
    "media_url",
    "gallery_items",
    "players_html",
    "hits_html",
    "status_markdown",
    "parse_size",
]

_log = logging.getLogger("mmretrieve.demo")

#: Gradio's route that serves files in ``allowed_paths`` (relative to the page, so a root_path proxy works).
FILE_ROUTE = "gradio_api/file="

_MEDIA_MODALITIES = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO)


@dataclass(frozen=True)
class SearchResult:
    """Hits of one query (best first), the time the search took, and an error message instead of hits."""

    hits: tuple = ()
    seconds: float = 0.0
    error: str | None = None
    query: str = ""
    modalities: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_size(value: str | int | None) -> int | None:
    """'50mb' / '2 GB' / '800kb' / 1024 -> bytes; None -> None (no limit)."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    units = {"tb": 1024**4, "gb": 1024**3, "mb": 1024**2, "kb": 1024, "b": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        number, factor = text, 1
    try:
        size = float(number)
    except ValueError:
        raise ValueError(f"max_file_size={value!r}: expected a size such as '50mb', '2gb' or a number of bytes") from None
    if size <= 0:
        raise ValueError(f"max_file_size={value!r} must be positive")
    return int(size * factor)


def _modalities(value: str | Sequence[str] | None) -> tuple[Modality, ...] | None:
    """UI choice -> modality filter; 'any', empty or None = no filter."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    picked = [Modality(v) for v in items if v and v != "any"]
    return tuple(picked) or None


class DemoBackend:
    """Runs the demo's queries on one retriever (one at a time: the retriever is shared by all visitors)."""

    def __init__(self, retriever: Any, *, max_upload_bytes: int | None = 50 * 1024**2, note: str | None = None,
                 inversion: Any = None):
        """``inversion``: the network of the Composed tab's inversion method (a path; default: the preset's own)."""
        self.retriever = retriever
        self.max_upload_bytes = max_upload_bytes
        self.note = note
        self.inversion = inversion
        self._lock = threading.Lock()

    def default_composed_method(self) -> str:
        """The Composed tab's starting method: inversion when a network is at hand (passed, or shipped
        for the index's preset, as for ``sample``), arithmetic otherwise."""
        from ..models.inversion import has_shipped_inversion

        if self.inversion is not None or has_shipped_inversion(self.retriever.encoder.preset.name):
            return "inversion"
        return "arithmetic"

    # queries ------------------------------------------------------------------------------------------
    def text_search(self, text: str | None, modality: str | Sequence[str] | None, k: int | float) -> SearchResult:
        """Words -> hits of the chosen modality (or any)."""
        text = (text or "").strip()
        if not text:
            return SearchResult(error="Type a few words to search for.")
        return self._run(text, f"“{text}”", modality, k)

    def example_search(self, upload: Any, modality: str | Sequence[str] | None, k: int | float) -> SearchResult:
        """An uploaded image, clip or sound -> hits of any modality."""
        try:
            path, mod = self._upload(upload, "example")
        except ValueError as e:
            return SearchResult(error=str(e))
        from ..query import Query

        return self._run(Query(path, mod), f"{mod.value} {os.path.basename(path)}", modality, k)

    def composed_search(
        self, upload: Any, text: str | None, weight: float | None, modality: str | Sequence[str] | None, k: int | float,
        method: str = "arithmetic",
    ) -> SearchResult:
        """A reference image or clip plus a change in words: mixed by ``weight`` (the text's share) with
        ``method="arithmetic"``, or written into a prompt as a pseudo word with ``method="inversion"``."""
        try:
            path, mod = self._upload(upload, "reference")
        except ValueError as e:
            return SearchResult(error=str(e))
        text = (text or "").strip()
        if not text:
            return SearchResult(error="Type the change you want (for example “in blue”).")
        from ..query import DEFAULT_COMPOSED_TEXT_WEIGHT, Composed

        w = DEFAULT_COMPOSED_TEXT_WEIGHT if weight is None else float(weight)
        try:
            if method == "inversion":
                query = Composed(text=text, method="inversion", inversion=self.inversion, **{mod.value: path})
                how = "textual inversion"
            else:
                query = Composed(text=text, weight=w, method=method, **{mod.value: path})
                how = f"text weight {w:.2f}"
        except ValueError as e:
            return SearchResult(error=str(e))
        return self._run(query, f"{mod.value} {os.path.basename(path)} + “{text}” ({how})", modality, k)

    def _upload(self, upload: Any, what: str) -> tuple[str, Modality]:
        path = _upload_path(upload)
        if path is None:
            raise ValueError(f"Upload an image, a video clip or a sound as the {what} first.")
        name = os.path.basename(path)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise ValueError(f"{name}: the upload can't be read; upload it again.") from None
        if size == 0:
            raise ValueError(f"{name}: the file is empty.")
        if self.max_upload_bytes is not None and size > self.max_upload_bytes:
            raise ValueError(f"{name}: {size / 1024**2:.1f} MB is over the upload limit of {self.max_upload_bytes / 1024**2:.0f} MB.")
        mod = modality_of_path(path)
        if mod is None or mod not in _MEDIA_MODALITIES:
            raise ValueError(f"{name}: not an image, video or audio file extension this demo can read.")
        return path, mod

    def _run(self, query: Any, label: str, modality: Any, k: int | float) -> SearchResult:
        try:
            mods = _modalities(modality)
            kk = int(k)
            if kk < 1:
                raise ValueError(f"k={kk} must be at least 1")
            names = tuple(m.value for m in mods) if mods else ()
            with self._lock:
                t0 = time.perf_counter()
                hits = self.retriever.search(query, modality=list(mods) if mods else None, k=kk)
                seconds = time.perf_counter() - t0
        except (MMRError, ValueError, TypeError, FileNotFoundError, OSError) as e:
            return SearchResult(error=_short(e), query=label)
        except Exception as e:  # never a traceback in the page; the server log keeps it
            _log.exception("demo search failed for %s", label)
            return SearchResult(error=f"The search failed ({type(e).__name__}); see the server log.", query=label)
        return SearchResult(hits=tuple(hits), seconds=seconds, query=label, modalities=names)

    # index facts --------------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            return self.retriever.info()

    def stats_markdown(self) -> str:
        """Entries per modality, the encoder and where the index lives, as Markdown."""
        info = self.stats()
        counts = info.get("counts", {})
        parts = [f"{counts.get(m, 0)} {m}" for m in ("image", "video", "audio", "text") if counts.get(m, 0) or m != "text"]
        lines = [
            f"**Index:** {counts.get('total', sum(v for k, v in counts.items() if k != 'total'))} entries "
            f"({', '.join(parts)}) from {info.get('files', '?')} files",
            f"**Encoder:** preset `{info.get('preset')}` · id `{info.get('encoder_id')}` · dim {info.get('dim')}"
            f" · faiss `{info.get('factory')}` · {info.get('device')}",
        ]
        if info.get("searchable"):
            lines.append(f"**Searchable:** {', '.join(info['searchable'])}")
        if not info.get("audio_trained", True):
            lines.append("**Note:** the audio tower of this encoder is untrained, so audio results are not meaningful.")
        if self.note:
            lines.append(f"**Note:** {self.note}")
        return "  \n".join(lines)


def _upload_path(upload: Any) -> str | None:
    """Gradio gives a path string, a FileData-like object with ``.path``/``.name``, or a dict."""
    if upload is None:
        return None
    if isinstance(upload, (str, os.PathLike)):
        return os.fspath(upload) or None
    if isinstance(upload, dict):
        return upload.get("path") or upload.get("name")
    return getattr(upload, "path", None) or getattr(upload, "name", None)


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 400 else first[:397] + "..."


# rendering -----------------------------------------------------------------------------------------------
def media_url(path: str, start: float | None = None, end: float | None = None, *, route: str = FILE_ROUTE) -> str:
    """URL of an indexed file on Gradio's file route, with a media fragment ``#t=start,end`` for a window."""
    url = route + urllib.parse.quote(path, safe="/")
    if start is not None:
        url += f"#t={start:g}" + (f",{end:g}" if end is not None else "")
    return url


def _window(hit: Any) -> str:
    if hit.start is None:
        return ""
    return f"{hit.start:.1f}–{hit.end:.1f} s" if hit.end is not None else f"from {hit.start:.1f} s"


def _name(hit: Any) -> str:
    if hit.path is not None:
        return os.path.basename(hit.path)
    text = hit.metadata.get("text") if isinstance(hit.metadata, dict) else None
    return f"“{text}”" if text else f"<in-memory #{hit.id}>"


def gallery_items(hits: Sequence[Any]) -> list[tuple[str, str]]:
    """(file, caption with rank and score) for every image hit, best first."""
    return [
        (h.path, f"#{rank} · {h.score:.3f} · {os.path.basename(h.path)}")
        for rank, h in enumerate(hits, 1)
        if Modality(h.modality) is Modality.IMAGE and h.path is not None
    ]


def players_html(hits: Sequence[Any], modality: Modality | str, *, route: str = FILE_ROUTE) -> str:
    """HTML5 players for video or audio hits; each starts at its window's start second."""
    mod = Modality(modality)
    tag = "video" if mod is Modality.VIDEO else "audio"
    cards = []
    for rank, h in enumerate(hits, 1):
        if Modality(h.modality) is not mod or h.path is None:
            continue
        src = html.escape(media_url(h.path, h.start, h.end, route=route), quote=True)
        window = _window(h)
        cards.append(
            f'<figure class="mmr-card mmr-{tag}" data-rank="{rank}" data-path="{html.escape(h.path, quote=True)}"'
            f' data-start="{h.start if h.start is not None else ""}" data-end="{h.end if h.end is not None else ""}">'
            f'<{tag} controls preload="metadata" src="{src}"></{tag}>'
            f"<figcaption><b>#{rank}</b> {html.escape(_name(h))} · score {h.score:.3f}"
            + (f' · <span class="mmr-window">window {window}</span>' if window else "")
            + "</figcaption></figure>"
        )
    if not cards:
        return ""
    return f'<div class="mmr-players mmr-{tag}s">' + "".join(cards) + "</div>"


def hits_html(hits: Sequence[Any]) -> str:
    """A ranked list of every hit (any modality): rank, score, modality, file, window."""
    if not hits:
        return '<p class="mmr-empty">No results.</p>'
    rows = []
    for rank, h in enumerate(hits, 1):
        mod = Modality(h.modality).value
        path_attr = html.escape(h.path or "", quote=True)
        rows.append(
            f'<tr class="mmr-hit" data-rank="{rank}" data-modality="{mod}" data-path="{path_attr}">'
            f"<td>{rank}</td><td>{h.score:.3f}</td><td>{mod}</td>"
            f'<td class="mmr-file" title="{path_attr}">{html.escape(_name(h))}</td><td>{html.escape(_window(h))}</td></tr>'
        )
    return (
        '<table class="mmr-hits"><thead><tr><th>#</th><th>score</th><th>modality</th><th>file</th><th>window</th></tr></thead>'
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def status_markdown(result: SearchResult) -> str:
    """One line above the results: the error, or how many hits and how long the search took."""
    if result.error is not None:
        return f"⚠️ {html.escape(result.error, quote=False)}"
    ms = result.seconds * 1000.0
    where = f" among {', '.join(result.modalities)}" if result.modalities else ""
    return f"{len(result.hits)} result(s){where} for {html.escape(result.query, quote=False)} in **{ms:.0f} ms** (embedding + search)"
