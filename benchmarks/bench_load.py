"""Concurrent read load on one on-disk UnifiedIndex: N searching processes (and optionally a writer).

    python benchmarks/bench_load.py [--vectors 100000] [--dim 512] [--processes 4] [--seconds 20]
                                    [--index DIR] [--with-writer] [--json FILE]

Builds an index of random L2-normalised float32 vectors (image / video / audio entries with
metadata), or reuses --index DIR when it already holds one. Then N processes each open it
readonly and search it for --seconds: random queries, k=10, a share of them filtered by modality
and by metadata. Every exception, and every answer that breaks the contract (wrong number of hits,
a hit outside the filter, scores not sorted or not finite), counts as an error. With --with-writer
one more process opens the index as its writer and commits batches of new vectors during the run
(removed again at the end, so a reused index keeps its content). Exit status 1 if any error.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

MODALITIES = ("image", "video", "audio")
TAGS = ("a", "b", "c", "d")
GROUPS = 10
FINGERPRINT = {"benchmark": "bench_load", "vectors": "random-unit"}
BUILD_CHUNK = 10_000
MAX_ERROR_SAMPLES = 5


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _records(start: int, n: int, prefix: str):
    from mmretrieve.index import Record

    out = []
    for i in range(start, start + n):
        mod = MODALITIES[i % 3]
        window = (float(i % 7) * 10.0, float(i % 7) * 10.0 + 10.0) if mod != "image" else (None, None)
        out.append(Record(path=f"/bench/{prefix}{i:07d}.bin", modality=mod, start=window[0], end=window[1],
                          metadata={"tag": TAGS[i % len(TAGS)], "group": i % GROUPS}))
    return out


def build_index(path: str, n: int, dim: int, factory: str, seed: int) -> float:
    """Create the index at path with n random vectors; returns the build time in seconds."""
    from mmretrieve.index import UnifiedIndex

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    ix = UnifiedIndex.create(dim, FINGERPRINT, factory=factory, path=path)
    try:
        for lo in range(0, n, BUILD_CHUNK):
            m = min(BUILD_CHUNK, n - lo)
            ix.add(_unit(rng, m, dim), _records(lo, m, "item"))
        ix.save()  # writes the faiss cache, so readers load it instead of rebuilding
    finally:
        ix.close()
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    from mmretrieve.testing import peak_rss_mb

    return peak_rss_mb()


def _check_hits(hits, k: int, modality, where) -> str | None:
    """None when the answer honours the search contract, else what is wrong."""
    if len(hits) != k:
        return f"{len(hits)} hits for k={k}"
    scores = [h.score for h in hits]
    if not all(math.isfinite(s) for s in scores):
        return f"non-finite score in {scores}"
    if any(a < b - 1e-6 for a, b in zip(scores, scores[1:])):
        return f"scores not sorted: {scores}"
    for h in hits:
        if modality is not None and h.modality.value != modality:
            return f"hit {h.id} has modality {h.modality.value}, filter {modality}"
        if where is not None and any(h.metadata.get(key) != value for key, value in where.items()):
            return f"hit {h.id} metadata {h.metadata} outside filter {where}"
    return None


def reader(wid: int, path: str, seconds: float, k: int, filtered_share: float, seed: int, threads: int,
           start_event, results) -> None:
    """One searching process: open readonly, wait for the start signal, search until the time is up."""
    report = {"role": "reader", "id": wid, "pid": os.getpid(), "queries": 0, "filtered": 0, "errors": 0,
              "error_samples": [], "latencies_ms": []}
    try:
        import faiss

        from mmretrieve.index import UnifiedIndex

        faiss.omp_set_num_threads(threads)
        rng = np.random.default_rng(seed + 1000 + wid)
        ix = UnifiedIndex.open(path, readonly=True)
        pool = _unit(rng, 512, ix.dim)
        ix.search(pool[0], k=k)  # warm-up outside the timed window
        report["generation_start"] = ix.generation
        results.put(("ready", wid))
        start_event.wait()
        t_start = time.time()
        deadline = time.monotonic() + seconds
        lat = report["latencies_ms"]
        while time.monotonic() < deadline:
            q = pool[int(rng.integers(len(pool)))]
            modality = where = None
            u = rng.random()
            if u < filtered_share:
                modality = MODALITIES[int(rng.integers(3))]
                if u < filtered_share / 2:
                    where = {"tag": TAGS[int(rng.integers(len(TAGS)))]}
                report["filtered"] += 1
            t0 = time.perf_counter()
            try:
                hits = ix.search(q, k=k, modality=modality, where=where)[0]
                problem = _check_hits(hits, k, modality, where)
            except Exception as exc:  # every exception is an error; keep going
                problem = f"{type(exc).__name__}: {exc}"
            lat.append((time.perf_counter() - t0) * 1000.0)
            report["queries"] += 1
            if problem is not None:
                report["errors"] += 1
                if len(report["error_samples"]) < MAX_ERROR_SAMPLES:
                    report["error_samples"].append(problem)
        report["t_start"], report["t_end"] = t_start, time.time()
        report["generation_end"] = ix.generation
        ix.close()
    except Exception:
        report["errors"] += 1
        report["error_samples"].append(traceback.format_exc(limit=3))
        results.put(("ready", wid))  # never leave the parent waiting
    report["peak_rss_mb"] = _peak_rss_mb()
    results.put(("done", report))


def writer(path: str, seconds: float, batch: int, interval: float, seed: int, keep: bool, start_event,
           results) -> None:
    """The writer process: commit `batch` new vectors every `interval` seconds during the run."""
    report = {"role": "writer", "pid": os.getpid(), "commits": 0, "rows_added": 0, "rows_removed": 0,
              "errors": 0, "error_samples": [], "commit_ms": []}
    try:
        from mmretrieve.index import UnifiedIndex

        rng = np.random.default_rng(seed + 7)
        ix = UnifiedIndex.open(path)
        results.put(("ready", "writer"))
        start_event.wait()
        deadline = time.monotonic() + seconds
        ids: list[int] = []
        n = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                ids += ix.add(_unit(rng, batch, ix.dim), _records(n, batch, f"writer/{os.getpid()}-"))
                report["commits"] += 1
                report["rows_added"] += batch
                n += batch
            except Exception as exc:
                report["errors"] += 1
                if len(report["error_samples"]) < MAX_ERROR_SAMPLES:
                    report["error_samples"].append(f"{type(exc).__name__}: {exc}")
            report["commit_ms"].append((time.perf_counter() - t0) * 1000.0)
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        if not keep and ids:
            report["rows_removed"] = ix.remove(ids)
        ix.close()
    except Exception:
        report["errors"] += 1
        report["error_samples"].append(traceback.format_exc(limit=3))
        results.put(("ready", "writer"))
    report["peak_rss_mb"] = _peak_rss_mb()
    results.put(("done", report))


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run(args: argparse.Namespace) -> dict:
    from mmretrieve.index import UnifiedIndex
    from mmretrieve.index.layout import MANIFEST_NAME

    tmp = None
    build_s = None
    if args.index and os.path.isfile(os.path.join(args.index, MANIFEST_NAME)):
        path = os.path.abspath(args.index)
    else:
        if args.index:
            path = os.path.abspath(args.index)
        else:
            tmp = tempfile.mkdtemp(prefix="bench_load-")
            path = os.path.join(tmp, "index")
        build_s = build_index(path, args.vectors, args.dim, args.factory, args.seed)
    try:
        with UnifiedIndex.open(path, readonly=True) as ix:
            n_vectors, dim, factory = len(ix), ix.dim, ix.factory
            by_modality = {m: ix.count(m) for m in MODALITIES}
        ctx = mp.get_context("spawn")
        start_event = ctx.Event()
        results = ctx.Queue()
        procs = [ctx.Process(target=reader, args=(w, path, args.seconds, args.k, args.filtered_share, args.seed,
                                                  args.threads, start_event, results), daemon=True)
                 for w in range(args.processes)]
        if args.with_writer:
            procs.append(ctx.Process(target=writer, args=(path, args.seconds, args.writer_batch,
                                                          args.writer_interval, args.seed, args.keep_writes,
                                                          start_event, results), daemon=True))
        for p in procs:
            p.start()
        reports: list[dict] = []
        ready = 0
        limit = time.monotonic() + args.startup_timeout
        while ready < len(procs) and time.monotonic() < limit:
            try:
                kind, payload = results.get(timeout=1.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if kind == "ready":
                ready += 1
            else:
                reports.append(payload)
        start_event.set()
        t0 = time.time()
        limit = time.monotonic() + args.seconds + args.startup_timeout
        while len(reports) < len(procs) and time.monotonic() < limit:
            try:
                kind, payload = results.get(timeout=1.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
                continue
            if kind == "done":
                reports.append(payload)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        wall = time.time() - t0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    readers = sorted((r for r in reports if r["role"] == "reader"), key=lambda r: r["id"])
    writers = [r for r in reports if r["role"] == "writer"]
    lost = len(procs) - len(reports)
    exit_codes = [p.exitcode for p in procs]
    lat = np.asarray([x for r in readers for x in r["latencies_ms"]], dtype=np.float64)
    starts = [r["t_start"] for r in readers if "t_start" in r]
    ends = [r["t_end"] for r in readers if "t_end" in r]
    duration = (max(ends) - min(starts)) if starts and ends else wall
    queries = int(sum(r["queries"] for r in readers))
    errors = int(sum(r["errors"] for r in reports)) + lost + sum(1 for c in exit_codes if c not in (0, None))
    out = {
        "vectors": n_vectors,
        "dim": dim,
        "by_modality": by_modality,
        "factory": factory,
        "build_s": None if build_s is None else round(build_s, 2),
        "processes": args.processes,
        "duration_s": round(duration, 3),
        "queries": queries,
        "filtered_queries": int(sum(r["filtered"] for r in readers)),
        "throughput_qps": round(queries / duration, 2) if duration > 0 else 0.0,
        "latency_ms": {"p50": round(_pct(lat, 50), 3), "p99": round(_pct(lat, 99), 3),
                       "max": round(float(lat.max()), 3) if len(lat) else float("nan")},
        "errors": errors,
        "lost_processes": lost,
        "exit_codes": exit_codes,
        "per_process": [{
            "id": r["id"], "pid": r["pid"], "queries": r["queries"], "errors": r["errors"],
            "p50_ms": round(_pct(np.asarray(r["latencies_ms"]), 50), 3),
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "generation_start": r.get("generation_start"), "generation_end": r.get("generation_end"),
            "error_samples": r["error_samples"],
        } for r in readers],
        "writer": None,
    }
    if writers:
        w = writers[0]
        cm = np.asarray(w["commit_ms"], dtype=np.float64)
        out["writer"] = {"commits": w["commits"], "rows_added": w["rows_added"], "rows_removed": w["rows_removed"],
                         "commit_ms_p50": round(_pct(cm, 50), 3),
                         "commit_ms_max": round(float(cm.max()), 3) if len(cm) else float("nan"),
                         "errors": w["errors"], "peak_rss_mb": round(w["peak_rss_mb"], 1),
                         "error_samples": w["error_samples"]}
    return out


def print_figures(r: dict) -> None:
    lat = r["latency_ms"]
    print(f"vectors            {r['vectors']}  (dim {r['dim']}, faiss {r['factory']}; "
          + ", ".join(f"{m} {n}" for m, n in r["by_modality"].items()) + ")")
    if r["build_s"] is not None:
        print(f"build_s            {r['build_s']:.2f}")
    print(f"processes          {r['processes']}" + (" + 1 writer" if r["writer"] else ""))
    print(f"duration_s         {r['duration_s']:.2f}")
    print(f"queries            {r['queries']}  (filtered {r['filtered_queries']})")
    print(f"throughput_qps     {r['throughput_qps']:.1f}")
    print(f"latency_ms         p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}")
    print(f"errors             {r['errors']}")
    for p in r["per_process"]:
        print(f"  reader {p['id']}  queries {p['queries']}  errors {p['errors']}  p50_ms {p['p50_ms']:.2f}  "
              f"peak_rss_mb {p['peak_rss_mb']:.0f}  generation {p['generation_start']}->{p['generation_end']}")
        for sample in p["error_samples"]:
            print(f"    error: {sample.strip()}")
    w = r["writer"]
    if w:
        print(f"  writer    commits {w['commits']}  rows_added {w['rows_added']}  rows_removed {w['rows_removed']}  "
              f"commit_ms p50 {w['commit_ms_p50']:.2f} max {w['commit_ms_max']:.2f}  errors {w['errors']}  "
              f"peak_rss_mb {w['peak_rss_mb']:.0f}")
        for sample in w["error_samples"]:
            print(f"    error: {sample.strip()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000, help="vectors in a newly built index")
    ap.add_argument("--dim", type=int, default=512, help="dimension of a newly built index")
    ap.add_argument("--factory", default="Flat", help="faiss factory of a newly built index")
    ap.add_argument("--index", default=None, metavar="DIR",
                    help="reuse this index (built here and kept when missing); default: a temporary one")
    ap.add_argument("--processes", type=int, default=4, help="searching processes")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long every process searches")
    ap.add_argument("-k", "--k", type=int, default=10)
    ap.add_argument("--filtered-share", type=float, default=0.3,
                    help="share of queries with a modality filter (half of them also filter metadata)")
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads per searching process")
    ap.add_argument("--with-writer", action="store_true", help="one more process commits vectors during the run")
    ap.add_argument("--writer-batch", type=int, default=200, help="vectors per writer commit")
    ap.add_argument("--writer-interval", type=float, default=0.25, help="seconds between writer commits")
    ap.add_argument("--keep-writes", action="store_true", help="leave the writer's vectors in the index")
    ap.add_argument("--startup-timeout", type=float, default=300.0, help="seconds allowed to open the index")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the figures as JSON ('-': stdout)")
    args = ap.parse_args(argv)
    if args.processes < 1 or args.seconds <= 0 or args.vectors < 1 or args.dim < 1 or args.k < 1:
        ap.error("--processes, --seconds, --vectors, --dim and -k must be positive")
    if not 0.0 <= args.filtered_share <= 1.0:
        ap.error("--filtered-share must be within [0, 1]")
    result = run(args)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print_figures(result)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
