"""mmretrieve synth OUT: generate the synthetic multimodal corpus with captions and ground truth."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic corpus (shapes, moving shapes, tones) with captions")
    p.add_argument("out", metavar="OUT", help="folder to write (images/, videos/, audio/, manifest.jsonl)")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--audio", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_corpus

    corpus = make_corpus(args.out, n_images=args.images, n_videos=args.videos, n_audio=args.audio, seed=args.seed, progress=True)
    manifest = corpus.write_manifest(ground_truth=True)
    print(f"wrote {len(corpus.items)} items ({args.images} images, {args.videos} videos, {args.audio} sounds) to {args.out}")
    print(f"manifest: {manifest}")
    return 0
