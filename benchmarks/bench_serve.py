"""Load on `mmretrieve serve`: N concurrent clients on loopback for a bounded time, and the same queries in-process.

    python benchmarks/bench_serve.py [--entries 100000] [--clients 4] [--seconds 20] [--preset tiny-random]

The index holds ``--entries`` synthetic unit vectors (added through the public index API, metadata
``{"album": i % 10}``) plus a few real images used as uploads. The query mix: 50% text, 25% uploaded
image, 25% text filtered by ``where={"album": 3}`` and ``modality="image"``. The server runs in its own
process (uvicorn, as `mmretrieve serve` starts it); clients are threads using ``mmretrieve.Client``.
Prints q/s, p50/p99 latency and errors for the server, then the same mix through ``Retriever.search``
in this process with as many threads, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import mmretrieve as mmr
from mmretrieve.demo.serve import free_port
from mmretrieve.index import Record
from mmretrieve.media.write import write_image

TEXTS = ["a red circle", "a dog on the beach", "two blue squares", "a quiet flute", "a city at night",
         "a green triangle on the left", "waves", "a small yellow cross"]


def build_index(path: str, media: str, entries: int, preset: str) -> list[str]:
    rng = np.random.default_rng(0)
    os.makedirs(media, exist_ok=True)
    images = [write_image(os.path.join(media, f"u{i}.jpg"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
              for i in range(4)]
    with mmr.Retriever.create(preset, path=path, num_workers=0) as r:
        r.add(media, progress=False)
        dim, chunk = r.index.dim, 20_000
        for start in range(0, entries, chunk):
            n = min(chunk, entries - start)
            v = rng.standard_normal((n, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            records = [Record(path=None, modality="image", metadata={"album": (start + i) % 10, "n": start + i})
                       for i in range(n)]
            with r.index.batch():
                r.index.add(v, records)
        r.save()
        print(f"index: {len(r)} entries, dim {dim}, preset {preset}")
    return [os.path.realpath(p) for p in images]


def make_queries(images: list[str], n: int, seed: int) -> list[tuple[object, dict]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.5:
            out.append((rnd.choice(TEXTS), {"k": 10}))
        elif kind < 0.75:
            out.append((pathlib.Path(rnd.choice(images)), {"k": 10}))
        else:
            out.append((rnd.choice(TEXTS), {"k": 10, "modality": "image", "where": {"album": 3}}))
    return out


def load(search, queries_per_worker: list[list], seconds: float) -> tuple[int, int, list[float], float]:
    """Run ``search(query, **kwargs)`` from one thread per query list until ``seconds`` pass."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(queries):
        i = 0
        mine, bad = [], 0
        while time.monotonic() < stop_at:
            q, kw = queries[i % len(queries)]
            i += 1
            t0 = time.perf_counter()
            try:
                search(q, **kw)
                mine.append(time.perf_counter() - t0)
            except Exception:
                bad += 1
        with lock:
            lat.extend(mine)
            errors[0] += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(qs,)) for qs in queries_per_worker]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), errors[0], lat, time.perf_counter() - t0


def report(name: str, done: int, errors: int, lat: list[float], wall: float) -> float:
    qps = done / wall
    p50, p99 = (np.percentile(lat, [50, 99]) * 1000) if lat else (float("nan"), float("nan"))
    print(f"{name:<28} {done:>6} queries in {wall:5.1f} s: {qps:7.1f} q/s, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, "
          f"errors {errors}")
    return qps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=4, help="server --concurrency")
    ap.add_argument("--preset", default="tiny-random")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = os.path.join(tmp, "bench.mmr")
        t0 = time.perf_counter()
        images = build_index(index, os.path.join(tmp, "media"), args.entries, args.preset)
        print(f"built in {time.perf_counter() - t0:.1f} s; {args.clients} clients for {args.seconds:g} s, "
              f"mix 50% text / 25% upload / 25% filtered; {os.cpu_count()} CPU(s)")
        per_worker = [make_queries(images, 200, seed) for seed in range(args.clients)]
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
        server = subprocess.Popen([sys.executable, "-m", "mmretrieve", "serve", index, "--port", str(port),
                                   "--concurrency", str(args.concurrency)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            client = mmr.Client(f"http://127.0.0.1:{port}", timeout=60)
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.health()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            for q, kw in per_worker[0][:8]:  # warm-up: faiss index built, code paths loaded
                client.search(q, **kw)
            served = report("server (HTTP, loopback)", *load(client.search, per_worker, args.seconds))
        finally:
            server.terminate()
            server.wait(30)
        with mmr.Retriever.load(index, readonly=True) as r:
            for q, kw in per_worker[0][:8]:
                r.search(q, **kw)
            local = report("in-process Retriever.search", *load(r.search, per_worker, args.seconds))
        print(f"ratio server / in-process: {served / local:.2f}")


if __name__ == "__main__":
    main()
