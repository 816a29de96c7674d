"""The ``mmretrieve`` command: one sub-command per module in :mod:`mmretrieve.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import MMRError

__all__ = ["main", "build_parser"]

# Each module defines register(subparsers) which adds its parser and sets `run` (args -> exit code).
_COMMANDS = (
    "index",
    "search",
    "info",
    "remove",
    "optimize",
    "verify",
    "synth",
    "train",
    "eval",
    "quickstart",
    "demo",
    "serve",
    "duplicates",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmretrieve",
        description="Multimodal retrieval: index images, videos and audio in one space; search with words or examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"mmretrieve.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # argparse fills an optional positional before it sees the options, so `search INDEX --file ref.jpg
    # "that is red"` would leave the words over; a command names such a positional in `late_positional`
    late = getattr(args, "late_positional", None)
    if late and len(extras) == 1 and not extras[0].startswith("-") and getattr(args, late) is None:
        setattr(args, late, extras.pop())
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        return int(args.run(args) or 0)
    except (MMRError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"mmretrieve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmretrieve {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
