"""Images/s of the image encoder alone vs. end-to-end indexing of a generated folder, side by side.

    python benchmarks/bench_indexing.py [--preset vit-b32-random] [--images 256] [--batch-size 32]

Random weights are fine for speed. Prints both figures and their ratio (target >= 0.85 on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def make_folder(root: str, n: int, size=(640, 480)) -> None:
    from mmretrieve.media.write import write_image

    rng = np.random.default_rng(0)
    for i in range(n):
        # smooth random images compress like photos (pure noise would make decoding unrealistically slow)
        small = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))
        write_image(os.path.join(root, f"img_{i:05d}.jpg"), img, quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit-b32-random")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    import mmretrieve as mmr
    from mmretrieve.embedding import default_workers

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        os.makedirs(folder)
        make_folder(folder, args.images)
        r = mmr.Retriever.create(args.preset, batch_size=args.batch_size, num_workers=args.workers)
        enc = r.encoder
        size = enc.preset.image_size
        pixels = torch.randn(args.images, 3, size, size)
        with torch.inference_mode():  # warm-up
            enc.encode_image(pixels[: args.batch_size])
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, args.images, args.batch_size):
                enc.encode_image(pixels[s : s + args.batch_size])
        encoder_only = args.images / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        report = r.add(folder, progress=False)
        end_to_end = args.images / (time.perf_counter() - t0)
        assert report.entries == args.images and not report.failed, report

    workers = args.workers if args.workers is not None else default_workers(args.images)
    print(f"preset {args.preset}, {args.images} JPEGs 640x480, batch {args.batch_size}, "
          f"{workers} decode worker(s), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(f"encoder alone (pre-decoded tensors): {encoder_only:8.1f} images/s")
    print(f"end-to-end indexing (decode+hash+encode+index): {end_to_end:8.1f} images/s")
    print(f"ratio end-to-end / encoder alone: {end_to_end / encoder_only:.3f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
