"""Argument helpers shared by sub-commands."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..modality import Modality


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")


def add_pretrained(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH_OR_TAG",
        help="local checkpoint file/dir (or open_clip tag / hf-hub:) instead of the preset's weights; for "
             "--preset languagebind a folder holding the published tower directories",
    )


def add_modality(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--modality", "-m", action="append", choices=[m.value for m in Modality], help=help)


def parse_where(items: list[str] | None) -> dict[str, Any] | None:
    """--where key=value (repeatable); the value is parsed as JSON when it can be (numbers, lists)."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
