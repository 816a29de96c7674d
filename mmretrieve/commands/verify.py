"""mmretrieve verify INDEX [--repair]: check that vectors, metadata, faiss cache, encoder and media agree."""
from __future__ import annotations

import argparse
import dataclasses

from ._common import add_device, add_pretrained, print_json


def register(sub) -> None:
    p = sub.add_parser("verify", help="check an index (counts, ids, orphans, faiss cache, encoder, media hashes); --repair fixes")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--repair", action="store_true",
                   help="remove orphan/duplicate rows, re-embed changed files, rebuild a bad faiss cache")
    p.add_argument("--prune-missing", action="store_true", help="with --repair: also drop entries of files that no longer exist")
    p.add_argument("--no-hash", action="store_true", help="do not re-hash indexed media (only check that they exist)")
    p.add_argument("--no-encoder", action="store_true", help="do not rebuild the encoder to compare fingerprints")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the index is sound (after repair, if asked), 1 when problems remain."""
    from ..verify import verify_index

    report = verify_index(
        args.index,
        repair=args.repair,
        check_encoder=not args.no_encoder,
        hash_media=not args.no_hash,
        prune_missing=args.prune_missing,
        pretrained=args.pretrained,
        device=args.device,
    )
    if args.json:
        body = dataclasses.asdict(report)
        body["ok"] = report.ok
        body["problems"] = report.problems()
        print_json(body)
    else:
        print(report)
    return 0 if report.ok else 1
