"""Throughput of the LanguageBind towers on this machine: images/s, video windows/s, audio windows/s.

    python benchmarks/bench_languagebind.py [--size full|narrow] [--batch 2] [--repeats 2]
                                            [--weights DIR] [--device cpu] [--json FILE]

Each tower is built at the published size (ViT-L/14, random weights unless --weights DIR points
at a folder of the published checkpoints) one at a time, fed its real preprocessed input (a 224 px
image, a 10-s window of 8 frames, a 10-s recording as 3 x 112 x 1036 fbank chunks) and timed over
--repeats batches after one warm-up batch. Preprocessing is timed separately (ms per item, one
process). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmretrieve.models.languagebind import (LanguageBindAudioFrontend, LanguageBindTower, LanguageBindVisualPreprocessor,
                                            load_tower, open_checkpoint, read_config)
from mmretrieve.testing.languagebind import REPOS, published_config


def _tower(kind: str, size: str, weights: str | None, tmp: str) -> LanguageBindTower:
    if weights:
        return load_tower(open_checkpoint(os.path.join(weights, REPOS[kind]), kind), text=False)[0]
    path = os.path.join(tmp, f"{kind}-config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(published_config(kind, narrow=size == "narrow"), f)
    tower = LanguageBindTower(read_config(path, kind))
    tower.text_model = None  # the benchmark times the modality towers only
    return tower.eval()


def _inputs(kind: str, batch: int) -> tuple[torch.Tensor, float]:
    """A batch of preprocessed inputs and the preprocessing time per item in ms."""
    rng = np.random.default_rng(0)
    visual, frontend = LanguageBindVisualPreprocessor(), LanguageBindAudioFrontend()
    if kind == "image":
        raw = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
        prep = visual
    elif kind == "video":
        raw = [rng.integers(0, 256, (8, 360, 640, 3), dtype=np.uint8) for _ in range(batch)]
        prep = visual.frames
    else:
        raw = [(0.1 * rng.standard_normal(160000)).astype(np.float32) for _ in range(batch)]
        prep = frontend
    prep(raw[0])  # warm-up (first-call set-up is not per-item cost)
    t0 = time.perf_counter()
    items = [prep(r) for r in raw]
    ms = (time.perf_counter() - t0) * 1000 / batch
    return torch.stack(items), ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("full", "narrow"), default="full")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--weights", metavar="DIR", help="a folder holding the published checkpoint directories")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    import tempfile

    device = torch.device(args.device)
    results = {}
    unit = {"image": "images/s", "video": "video windows/s (8 frames)", "audio": "audio windows/s (10 s)"}
    print(f"LanguageBind towers, {args.size} size, batch {args.batch}, {args.repeats} timed batches, device {device}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("image", "video", "audio"):
            tower = _tower(kind, args.size, args.weights, tmp).to(device)
            x, pre_ms = _inputs(kind, args.batch)
            x = x.to(device)
            with torch.inference_mode():
                tower.encode_vision(x)  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    tower.encode_vision(x)
                seconds = time.perf_counter() - t0
            rate = args.batch * args.repeats / seconds
            results[kind] = {"per_second": rate, "preprocess_ms_per_item": pre_ms}
            print(f"  {kind:5s}: {rate:8.3f} {unit[kind]:28s} preprocessing {pre_ms:7.1f} ms/item")
            del tower, x
            gc.collect()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"size": args.size, "batch": args.batch, "device": str(device), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
