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


def add_sampling_options(group, *, frames_flags: tuple[str, ...] = ("--frames",)) -> None:
    """Flags that override the preset's sampling (``Sampling.override``); see :func:`sampling_changes`."""
    group.add_argument(*frames_flags, dest="frames", type=int, metavar="N", help="frames sampled uniformly per video window")
    group.add_argument("--fps", type=float, help="sample frames at this rate instead of a fixed number per window")
    group.add_argument("--window", type=float, metavar="SECONDS", help="video window length (0: one window per video)")
    group.add_argument("--audio-window", type=float, metavar="SECONDS",
                       help="audio window length (0: one window per recording)")
    group.add_argument("--keyframe-snap", action="store_true",
                       help="take the keyframe nearest each sampling time (much faster on long GOPs, less exact)")
    group.add_argument("--video-backend", choices=("auto", "decord", "pyav"), help="frame decoder (default: auto)")


SAMPLING_FLAGS = ("frames", "fps", "window", "audio_window", "keyframe_snap", "video_backend")
"""The argparse destinations :func:`add_sampling_options` defines."""


def sampling_changes(args: argparse.Namespace) -> dict[str, Any]:
    """``Sampling.override`` keyword arguments for the sampling flags given (0 s windows mean one window)."""
    out: dict[str, Any] = {}
    if args.frames is not None:
        out["num_frames"] = args.frames
    if args.fps is not None:
        out["fps"] = args.fps
    if args.video_backend is not None:
        out["backend"] = args.video_backend
    if args.keyframe_snap:
        out["keyframe_snap"] = True
    if args.window is not None:
        out["window"] = args.window or None
    if args.audio_window is not None:
        out["audio_window"] = args.audio_window or None
    return out


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
