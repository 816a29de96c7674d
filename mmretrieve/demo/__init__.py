"""Gradio demos over an index: ``mmretrieve demo --index PATH`` or ``python demos/<app>.py --index PATH``.

Gradio is an optional dependency (``pip install "mmretrieve[demo]"``); it is imported only when a page
is built or launched.

    import mmretrieve, mmretrieve.demo
    r = mmretrieve.Retriever.load("media.mmr", readonly=True)
    demo = mmretrieve.demo.build_demo(r)
    mmretrieve.demo.launch(demo, r)            # http://127.0.0.1:<free port>/
"""
from __future__ import annotations

from .app import DEMO_CSS, TABS, build_demo
from .handlers import (
    DemoBackend,
    SearchResult,
    gallery_items,
    hits_html,
    media_url,
    parse_size,
    players_html,
    status_markdown,
)
from .serve import (
    DemoIndex,
    LaunchOptions,
    add_arguments,
    allowed_media_paths,
    build_sample_retriever,
    free_port,
    launch,
    main,
    open_retriever,
    run,
)

__all__ = [
    "TABS",
    "DEMO_CSS",
    "build_demo",
    "DemoBackend",
    "SearchResult",
    "gallery_items",
    "players_html",
    "hits_html",
    "media_url",
    "parse_size",
    "status_markdown",
    "DemoIndex",
    "LaunchOptions",
    "add_arguments",
    "allowed_media_paths",
    "build_sample_retriever",
    "free_port",
    "launch",
    "main",
    "open_retriever",
    "run",
]
