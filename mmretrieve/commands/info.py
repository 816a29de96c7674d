"""mmretrieve info INDEX: what an index holds and which encoder made it."""
from __future__ import annotations

import argparse

from ._common import add_device, add_pretrained, print_json


def register(sub) -> None:
    p = sub.add_parser("info", help="show counts per modality and the encoder of an index")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--json", action="store_true")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..retriever import Retriever

    with Retriever.load(args.index, device=args.device, pretrained=args.pretrained, readonly=True) as r:
        info = r.info()
    if args.json:
        print_json(info)
        return 0
    print(f"index:        {info['path']}")
    print(f"encoder:      {info['preset']} ({info['encoder_id']}), dim {info['dim']}, faiss {info['factory']}")
    print("entries:      " + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
    print(f"files:        {info['files']}")
    print(f"vectors:      stored as {info['vector_dtype']}")
    print(f"search:       {info['structure']['description']}")
    vs = info["video_sampling"]
    frames = f"{vs['fps']} fps" if vs.get("fps") else f"{vs['num_frames']} frames"
    window = f"{vs['window']:g}-s window" if vs.get("window") else "video (one entry per file)"
    snap = ", keyframe-snapped" if vs.get("keyframe_snap") else ""
    print(f"video:        {frames} per {window}{snap}, head {info['video_head']}")
    a_window = f"{info['audio_window']:g}-s windows" if info["audio_window"] else "one entry per file"
    tower = "trained" if info["audio_trained"] else "UNTRAINED (random projection: audio results are not meaningful)"
    print(f"audio:        {a_window}, tower {tower}")
    print(f"searchable:   {', '.join(info['searchable'])}")
    return 0
