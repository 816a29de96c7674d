"""mmretrieve serve INDEX: the HTTP JSON API over one index, with the encoder kept loaded."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from ._common import add_device, add_pretrained

TOKEN_ENV = "MMRETRIEVE_TOKEN"


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP (JSON search API, media streaming)")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--allow-writes", action="store_true",
                   help=f"enable POST /items and /remove; they need the bearer token from --token-file or ${TOKEN_ENV}")
    p.add_argument("--token-file", metavar="PATH", help="file holding the bearer token for writes")
    p.add_argument("--max-upload", default="50mb", help="largest request body, uploads included (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="searches run at once (default: %(default)s)")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.handlers import parse_size
    from ..errors import MissingExtraError
    from ..retriever import Retriever
    from ..server.config import ServeConfig

    try:
        from ..server.run import serve
    except ImportError as e:
        raise MissingExtraError(f"mmretrieve serve needs the serve extra ({e.name} is missing): "
                                "pip install 'mmretrieve[serve]'") from None

    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    config = ServeConfig(host=args.host, port=args.port, allow_writes=args.allow_writes, token=token,
                         max_upload_bytes=parse_size(args.max_upload), timeout=args.timeout,
                         concurrency=args.concurrency)
    if not _loopback(args.host):
        print(f"mmretrieve serve: warning: listening on {args.host}: other machines can search this index"
              + (" and (with the token) change it" if args.allow_writes else ""), file=sys.stderr)
    with Retriever.load(args.index, device=args.device, pretrained=args.pretrained, readonly=not args.allow_writes) as r:
        serve(r, config)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
