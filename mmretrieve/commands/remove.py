"""mmretrieve remove INDEX FILE...: drop every entry of the given files."""
from __future__ import annotations

import argparse

from ._common import add_device, add_pretrained


def register(sub) -> None:
    p = sub.add_parser("remove", help="remove files' entries from an index")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("paths", nargs="+", metavar="FILE")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..retriever import Retriever

    with Retriever.load(args.index, device=args.device, pretrained=args.pretrained) as r:
        removed = sum(r.remove(p) for p in args.paths)
        r.save()
    print(f"removed {removed} entries")
    return 0
