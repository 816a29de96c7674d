"""mmretrieve demo [--index PATH]: a web page (Gradio) to search an index with words, examples or both."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="serve a search page for an index on 127.0.0.1 (needs the [demo] extra)",
        description="Serve a Gradio page over an index: text -> image/video/audio, search by example, composed queries. "
        "Without --index, a small index is built from the synthetic sample corpus.",
    )
    from ..demo.serve import add_arguments

    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the demo needs Gradio: pip install "mmretrieve[demo]"') from None
    from ..demo.serve import run as serve

    return serve(args)
