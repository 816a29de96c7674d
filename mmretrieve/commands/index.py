"""mmretrieve index DIR... --index PATH: add or update media in an index (created when missing)."""
from __future__ import annotations

import argparse
import os
import sys

from ._common import add_device, add_pretrained, parse_where


def register(sub) -> None:
    p = sub.add_parser("index", help="index images, videos and audio found under folders or files")
    p.add_argument("inputs", nargs="+", metavar="PATH", help="files or folders (searched recursively by extension)")
    p.add_argument("--index", "-i", required=True, metavar="INDEX", help="index directory (created when missing)")
    p.add_argument("--preset", default="clip-vit-b32", help="encoder preset for a new index (default: %(default)s)")
    add_pretrained(p)
    add_device(p)
    p.add_argument("--factory", default="Flat", help="faiss factory string for a new index (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: auto)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="user metadata stored with every added file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any file was skipped")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..retriever import Retriever

    if os.path.exists(args.index):
        r = Retriever.load(args.index, device=args.device, pretrained=args.pretrained, batch_size=args.batch_size, num_workers=args.workers)
    else:
        r = Retriever.create(
            args.preset,
            path=args.index,
            factory=args.factory,
            device=args.device,
            pretrained=args.pretrained,
            batch_size=args.batch_size,
            num_workers=args.workers,
        )
    with r:
        report = r.add(list(args.inputs), metadata=parse_where(args.metadata), progress=not args.no_progress)
        r.save()
        print(report)
        counts = r.index.stats()
        print("index " + args.index + ": " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if report.failed:
        print(f"{len(report.failed)} file(s) skipped; see the reasons above", file=sys.stderr)
        return 1 if args.strict else 0
    return 0
