"""Open (or build) the index the demo shows, and launch the page safely: loopback by default, only the
index's own media served, uploads size-limited."""
from __future__ import annotations

import argparse
import inspect
import os
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .app import DEMO_CSS, TABS, build_demo
from .handlers import parse_size

__all__ = [
    "LaunchOptions",
    "DemoIndex",
    "open_retriever",
    "build_sample_retriever",
    "allowed_media_paths",
    "free_port",
    "launch",
    "add_arguments",
    "run",
    "main",
]

DEFAULT_MAX_FILE_SIZE = "50mb"


@dataclass(frozen=True)
class LaunchOptions:
    """Where and how the page is served. ``port`` None or 0 picks a free port."""

    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE
    open_browser: bool = False
    quiet: bool = False


@dataclass
class DemoIndex:
    """A retriever for the demo plus what the page should say about it."""

    retriever: Any
    note: str | None = None
    examples: Mapping[str, Sequence[str]] = field(default_factory=dict)  # text queries to offer, per result modality
    _tmp: Any = field(default=None, repr=False)  # keeps a generated sample corpus alive

    def close(self) -> None:
        self.retriever.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def build_sample_retriever(
    root: str | os.PathLike | None = None,
    *,
    preset: str | None = None,
    n_images: int = 24,
    n_videos: int = 12,
    n_audio: int = 12,
    seed: int = 0,
    device: str | None = None,
) -> DemoIndex:
    """Generate the synthetic corpus and index it with the "sample" preset (or "tiny-random" when absent).

    ``root`` None writes the corpus to a temporary folder removed by :meth:`DemoIndex.close` or at exit.
    """
    from ..data.synthetic import make_corpus
    from ..errors import WeightsUnavailableError
    from ..models import list_presets
    from ..retriever import Retriever

    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="mmretrieve-demo-")
        root = tmp.name
    why_not_sample = "the trained “sample” model is not installed"
    auto = preset is None
    if auto:
        preset = "sample" if "sample" in list_presets() else "tiny-random"
    try:
        retriever = Retriever.create(preset, device=device)
    except WeightsUnavailableError as e:
        if not (auto and preset == "sample"):
            raise
        print(f"mmretrieve demo: {e}; using the tiny-random preset instead", file=sys.stderr)
        why_not_sample = "the weights of the “sample” model could not be loaded"
        preset = "tiny-random"
        retriever = Retriever.create(preset, device=device)
    corpus = make_corpus(root, n_images=n_images, n_videos=n_videos, n_audio=n_audio, seed=seed)
    report = retriever.add(corpus.root, progress=False)
    if report.failed:
        print(str(report), file=sys.stderr)
    if preset == "tiny-random":
        note = (
            f"no --index given and {why_not_sample}, so this index was built from the "
            "synthetic sample corpus with the tiny-random preset (random weights): only searches by an indexed "
            "example are meaningful."
        )
    else:
        note = f"no --index given: this index was built from the synthetic sample corpus with the “{preset}” preset."
    examples = {m: tuple(dict.fromkeys(it.captions[0] for it in corpus.of(m)[:3] if it.captions)) for m in ("image", "video", "audio")}
    return DemoIndex(retriever, note=note, examples=examples, _tmp=tmp)


def open_retriever(index: str | os.PathLike | None, *, device: str | None = None, pretrained: str | None = None) -> DemoIndex:
    """Load ``index`` read-only (no writer lock is taken), or build the sample index when it is None."""
    if index is None:
        return build_sample_retriever(device=device)
    from ..retriever import Retriever

    path = os.fspath(index)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--index {path}: no such index (build one with `mmretrieve index DIR --index {path}`)")
    return DemoIndex(Retriever.load(path, device=device, pretrained=pretrained, readonly=True))


def allowed_media_paths(retriever: Any) -> list[str]:
    """Exactly the files the index holds (resolved, existing), which Gradio may serve; nothing else."""
    paths = set()
    for p in retriever.index.paths():
        if p is None:
            continue
        real = os.path.realpath(p)
        if os.path.isfile(real):
            paths.add(real)
    return sorted(paths)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch(demo: Any, retriever: Any, options: LaunchOptions = LaunchOptions(), *, block: bool = True) -> str:
    """Serve ``demo``; returns the local URL (after the server stops when ``block``, else at once)."""
    import gradio as gr

    port = options.port or free_port(options.host)
    allowed = allowed_media_paths(retriever)
    # An empty list would make Gradio fall back to $GRADIO_ALLOWED_PATHS: pin it to a harmless empty folder.
    if not allowed:
        allowed = [tempfile.mkdtemp(prefix="mmretrieve-demo-empty-")]
    kwargs: dict[str, Any] = dict(
        server_name=options.host,
        server_port=port,
        share=options.share,
        inbrowser=options.open_browser,
        allowed_paths=allowed,
        max_file_size=options.max_file_size,
        show_error=False,
        quiet=options.quiet,
        prevent_thread_lock=not block,
    )
    params = inspect.signature(gr.Blocks.launch).parameters
    if "css" in params:
        kwargs["css"] = DEMO_CSS
    if "ssr_mode" in params:
        kwargs["ssr_mode"] = False
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mmretrieve demo: serving on {options.host}: the indexed media are reachable by anyone who can reach this host", file=sys.stderr)
    url = f"http://{'[' + options.host + ']' if ':' in options.host else options.host}:{port}/"
    print(f"mmretrieve demo: {url} ({len(allowed)} media path(s) served)", flush=True)
    try:
        demo.queue(default_concurrency_limit=1).launch(**kwargs)
    except OSError as e:
        raise ValueError(f"--host {options.host} --port {port}: cannot serve there ({e})") from None
    return url


def add_arguments(p: argparse.ArgumentParser, *, tabs: bool = True) -> None:
    """The demo's command-line options (shared by ``mmretrieve demo`` and ``python demos/<app>.py``)."""
    p.add_argument("--index", "-i", default=None, metavar="INDEX", help="index to show (default: build one from the sample corpus)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 exposes the media to the network)")
    p.add_argument("--port", type=int, default=None, help="port (default or 0: a free port)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs the network)")
    p.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="upload size limit, e.g. 20mb (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--pretrained", default=None, metavar="PATH_OR_TAG", help="local weights for the index's encoder")
    if tabs:
        p.add_argument("--tabs", default=None, help=f"comma-separated subset of: {', '.join(TABS)} (default: all)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")


def run(args: argparse.Namespace, *, tabs: Sequence[str] | None = None, title: str | None = None) -> int:
    """Open the index, build the page and serve it until interrupted."""
    chosen = tabs
    if getattr(args, "tabs", None):
        chosen = [t.strip() for t in args.tabs.split(",") if t.strip()]
    limit = parse_size(args.max_file_size)
    options = LaunchOptions(host=args.host, port=args.port, share=args.share, max_file_size=limit, open_browser=args.open)
    if chosen is not None:
        bad = [t for t in chosen if t not in TABS]
        if bad:
            raise ValueError(f"--tabs {','.join(bad)}: choose from {', '.join(TABS)}")
    if options.port is not None and not 0 <= options.port < 65536:
        raise ValueError(f"--port {options.port}: must be between 0 and 65535")
    dix = open_retriever(args.index, device=args.device, pretrained=args.pretrained)
    try:
        extra = {} if title is None else {"title": title}
        demo = build_demo(dix.retriever, tabs=chosen, note=dix.note, examples=dix.examples, max_upload_bytes=limit, **extra)
        launch(demo, dix.retriever, options)
    finally:
        dix.close()
    return 0


def main(argv: Sequence[str] | None = None, *, tabs: Sequence[str] | None = None, title: str | None = None, prog: str | None = None) -> int:
    """Entry point of the apps in demos/: ``python demos/<app>.py --index PATH``."""
    p = argparse.ArgumentParser(prog=prog, description=title or "mmretrieve demo")
    add_arguments(p, tabs=tabs is None)
    args = p.parse_args(argv)
    from ..errors import MMRError

    try:
        return run(args, tabs=tabs, title=title)
    except (MMRError, FileNotFoundError, ValueError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
