"""Items/s of Retriever.add vs. index_with_ray (local Ray) on the same generated folder, and Milvus Lite search.

    python benchmarks/bench_distributed.py [--preset vit-b32-random] [--images 192] [--actors 1] [--cpus 2]

Random weights are fine for speed. Prints figures; asserts nothing. Ray's start-up is reported apart.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def make_folder(root: str, n: int, size=(640, 480)) -> None:
    from mmretrieve.media.write import write_image

    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        write_image(os.path.join(root, f"img_{i:05d}.jpg"), np.kron(small, np.ones((16, 16, 1), np.uint8)), quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit-b32-random")
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--address", default=None, help="an existing Ray cluster (default: a local one)")
    args = ap.parse_args()

    import ray

    import mmretrieve as mmr
    from mmretrieve.distributed import index_with_ray

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "media")
        os.makedirs(folder)
        make_folder(folder, args.images)
        n = args.images

        r = mmr.Retriever.create(args.preset, batch_size=args.batch_size)
        t = time.perf_counter()
        r.add(folder, progress=False)
        local_s = time.perf_counter() - t
        print(f"Retriever.add        : {n} images in {local_s:6.1f} s = {n / local_s:6.1f} items/s")

        t = time.perf_counter()
        if args.address:
            ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        print(f"ray.init             : {time.perf_counter() - t:6.1f} s")
        r2 = mmr.Retriever.create(args.preset, batch_size=args.batch_size)
        out = index_with_ray(folder, r2, num_actors=args.actors, batch_size=args.batch_size)
        ray_s = out.seconds
        print(f"index_with_ray ({args.actors} actor(s), {args.cpus} CPUs): {n} images in {ray_s:6.1f} s = "
              f"{n / ray_s:6.1f} items/s (ratio to Retriever.add {local_s / ray_s:.2f}; includes actor start-up)")
        ids = np.concatenate([chunk for chunk, _ in r.index.iter_vectors()])
        a, b = r.index.vectors(ids), r2.index.vectors(ids)
        print(f"max |vector difference| vs Retriever.add: {float(np.abs(a - b).max()):.2e}")
        ray.shutdown()

        try:
            from mmretrieve.distributed import export_to_milvus
        except ImportError:
            return
        t = time.perf_counter()
        m = export_to_milvus(r.index, os.path.join(tmp, "bench.db"), "bench")
        print(f"export_to_milvus     : {len(m)} entries in {time.perf_counter() - t:6.2f} s (incl. Milvus Lite start)")
        q = r.index.vectors(ids[:32])
        for name, index in (("UnifiedIndex", r.index), ("MilvusIndex (Lite)", m)):
            t = time.perf_counter()
            for _ in range(5):
                index.search(q, 10)
            print(f"search {name:18s}: {5 * len(q) / (time.perf_counter() - t):8.1f} queries/s (batches of 32, k=10)")
        m.close()
        r.close()
        r2.close()


if __name__ == "__main__":
    main()
