"""mmretrieve duplicates INDEX: groups of near-identical files, as text, CSV, JSON or an HTML page."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator, TextIO

from ..duplicates import DEFAULT_DUPLICATE_THRESHOLD
from ._common import add_device, add_modality, add_pretrained


def register(sub) -> None:
    p = sub.add_parser("duplicates", help="find groups of near-identical images, videos, sounds or texts")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--threshold", "-t", type=float, default=DEFAULT_DUPLICATE_THRESHOLD,
                   help="cosine similarity at or above which items are near-duplicates (default: %(default)s, "
                        "chosen by benchmarks/bench_duplicates.py; see the README)")
    add_modality(p, "only this modality (repeatable)")
    p.add_argument("--csv", metavar="PATH", help="write a CSV report (group, modality, path, id, similarity); - for stdout")
    p.add_argument("--json", metavar="PATH", help="write a JSON report; - for stdout")
    p.add_argument("--html", metavar="PATH", help="write an HTML page with a row of thumbnails per group")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            yield f


def run(args: argparse.Namespace) -> int:
    from ..duplicates import write_csv, write_html, write_json
    from ..retriever import Retriever

    with Retriever.load(args.index, device=args.device, pretrained=args.pretrained, readonly=True) as r:
        groups = r.duplicates(args.threshold, modality=args.modality)
    to_stdout = "-" in (args.csv, args.json)
    if args.csv:
        with _output(args.csv) as f:
            write_csv(groups, f)
    if args.json:
        with _output(args.json) as f:
            write_json(groups, f, args.threshold)
    if args.html:
        with _output(args.html) as f:
            write_html(groups, f, args.threshold)
    summary = sys.stderr if to_stdout else sys.stdout
    n_items = sum(len(g.items) for g in groups)
    print(f"{len(groups)} group(s) of near-duplicates, {n_items} item(s), at cosine >= {args.threshold:g}", file=summary)
    if not to_stdout:
        for g, group in enumerate(groups, 1):
            print(f"group {g} ({group.modality.value}, similarity >= {group.similarity:.4f}):")
            for item in group.items:
                print(f"  {item.similarity:.4f}  {item.path or f'<entry {item.id}>'}")
    return 0
