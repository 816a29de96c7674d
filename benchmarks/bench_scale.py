"""Index structures at scale, side by side: Flat, auto, and each structure auto can choose.

    python benchmarks/bench_scale.py [--n 1000000] [--dim 512] [--queries 200]
                                     [--structures Flat,auto,IVF1024,PQ128x4fs,...] [--max-memory 8G]
                                     [--threads 2] [--work DIR] [--keep] [--json FILE] [--search-memory 4G] [--reuse]

Data: --n clustered unit vectors (mmretrieve.testing.vectors), 4 modalities in turn and a metadata
key "shard" (10 values). Queries: --queries base vectors moved like text queries (the modality gap,
index.tuning.offset_queries) with exact top-10 ground truth computed by brute force. Each structure
is measured in fresh processes (so RSS is its own): one builds the index through UnifiedIndex (one
batch, so one choice / tuning at the end), one reopens it read-only and searches.

A structure written NAME@float16 stores the vectors as float16 (UnifiedIndex.create(vector_dtype=...)).

Columns: build (add + choose/train/tune, s); disk bytes per vector, every file of the directory
counted, its ratio to the raw float32 vector, and the split SQLite vector pages / SQLite metadata
pages / vectors.faiss / rerank.vec; reopen + first search (s); RSS after the searches (MB, and its
anonymous part: the mapped re-rank file and SQLite pages are file-backed, evictable page cache);
recall@10 vs exact; q/s at batch 1 (mean) and 64; search ms at batch 1 (median, and raw's); filtered-search latency (ms at
batch 1, medians of queries timed interleaved with unfiltered ones: modality="image" = 1/4 of the
items, where={"shard": 3} = 1/10) and the modality median over the unfiltered median; the first query with each filter in a fresh process (evaluated in SQL);
a filtered query right after a write in a writer that had used the filter before (its id set
carried forward, not re-scanned); and UnifiedIndex.search time over "raw": faiss searched directly
on the same structure and parameters for the same candidates (k x re-rank depth) plus the same
re-rank in numpy from the same rerank.vec mapping (plain faiss search for a structure that does not
re-rank), batch 1, ratio of medians with the two timed alternately query by query. Before starting, the memory available is printed and a run whose estimated peak
exceeds --memory-limit is refused. With --search-memory the search worker runs in a memory cgroup
capped at that size, page cache included: an index whose files are larger must still answer.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

FP = {"benchmark": "bench_scale", "vectors": "clustered-unit"}
CHUNK = 50_000
MODS = ("image", "video", "audio", "text")


def _records(lo: int, n: int):
    from mmretrieve.index import Record

    return [Record(path=f"/bench/{i}.bin", modality=MODS[i % 4], content_hash=f"h{i}", size=i,
                   metadata={"shard": i % 10}) for i in range(lo, lo + n)]


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mb(field: str = "VmRSS:") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _disk_split(path: str) -> dict:
    """Bytes of the SQLite vector pages, the other SQLite pages, the faiss cache and the re-rank file."""
    import sqlite3

    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    vec = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'vectors'").fetchone()[0] or 0
    conn.close()
    sqlite_total = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.startswith("meta.sqlite"))
    size = lambda name: os.path.getsize(os.path.join(path, name)) if os.path.exists(os.path.join(path, name)) else 0  # noqa: E731
    return {"sqlite_vectors": vec, "sqlite_meta": sqlite_total - vec, "faiss": size("vectors.faiss"),
            "rerank": size("rerank.vec"), "total": _dir_bytes(path)}


def _parse_structure(text: str) -> tuple[str, str]:
    name, _, dtype = text.partition("@")
    return name, dtype or "float32"


def _data_kwargs(args) -> dict:
    return {"clusters": args.clusters, "spread": 0.8, "seed": 0}


# ------------------------------------------------------------------------------------ workers
def build(args) -> dict:
    import faiss

    from mmretrieve.index import UnifiedIndex
    from mmretrieve.index.tuning import AUTO, TuningConfig, parse_memory
    from mmretrieve.testing.vectors import iter_clustered_unit_vectors

    faiss.omp_set_num_threads(args.threads)
    path = os.path.join(args.work, args.structure.replace(",", "_").replace("@", "_"))
    shutil.rmtree(path, ignore_errors=True)
    cfg = TuningConfig(max_memory=parse_memory(args.max_memory), flat_below=args.flat_below)
    factory, vector_dtype = _parse_structure(args.structure)
    t0 = time.perf_counter()
    ix = UnifiedIndex.create(args.dim, FP, factory=factory if factory != "auto" else AUTO,
                             path=path, tuning=cfg, vector_dtype=vector_dtype)
    lo = 0
    with ix.batch():
        for vecs in iter_clustered_unit_vectors(args.n, args.dim, chunk=CHUNK, **_data_kwargs(args)):
            ix.add(vecs, _records(lo, len(vecs)))
            lo += len(vecs)
    t_add = time.perf_counter() - t0  # includes the choice + tuning run when the batch commits
    ix.close()
    disk = _disk_split(path)
    return {"build_s": t_add, "bytes_per_vector": disk["total"] / args.n,
            "split": {k: v / args.n for k, v in disk.items()}, "build_peak_rss_mb": _peak_mb(), "path": path}


def _peak_mb() -> float:
    from mmretrieve.testing import peak_rss_mb

    return peak_rss_mb()


def search(args) -> dict:
    import faiss

    from mmretrieve.index import UnifiedIndex
    from mmretrieve.index.records import to_float32
    from mmretrieve.index.rerank import open_rerank
    from mmretrieve.index.tuning import Plan, apply_search_params, recall_at
    from mmretrieve.index.vectors import read_cache

    faiss.omp_set_num_threads(args.threads)
    path = os.path.join(args.work, args.structure.replace(",", "_").replace("@", "_"))
    q = np.load(os.path.join(args.work, "queries.npy"))
    truth = np.load(os.path.join(args.work, "truth.npy"))
    t0 = time.perf_counter()
    ix = UnifiedIndex.open(path, readonly=True)
    ix.search(q[:1], k=10)
    reopen = time.perf_counter() - t0
    info = ix.structure()
    found = np.array([[h.id - 1 for h in hits] + [-1] * (10 - len(hits)) for hits in ix.search(q, k=10)])
    recall = recall_at(found, truth)
    n1 = min(len(q), args.batch1)
    t_ours = _mean_s(lambda i: ix.search(q[i:i + 1], k=10), n1)
    reps = max(1, args.batch1 // 64)
    t0 = time.perf_counter()
    for r in range(reps):
        ix.search(q[(r * 64) % len(q):][:64], k=10)
    qps64 = 64 * reps / (time.perf_counter() - t0)
    nf = n1
    t0 = time.perf_counter()
    ix.search(q[-1:], k=10, modality="image")  # the first query with a filter evaluates it in SQL
    cold_mod = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix.search(q[-1:], k=10, where={"shard": 3})
    cold_where = time.perf_counter() - t0

    def filtered(i: int, **kw) -> None:
        hits = ix.search(q[i:i + 1], k=10, **kw)[0]
        assert len(hits) == 10
        if "modality" in kw:
            assert all(h.modality.value == "image" for h in hits)
        else:
            assert all(h.metadata["shard"] == 3 for h in hits)

    # per query, interleaved (unfiltered, modality, where): a shared machine's load hits all three alike
    med_plain, med_mod, med_where = _interleaved_medians([
        lambda i: ix.search(q[i:i + 1], k=10), lambda i: filtered(i, modality="image"),
        lambda i: filtered(i, where={"shard": 3})], nf)
    rss, anon = _rss_mb(), _rss_mb("RssAnon:")
    raw, _ = read_cache(os.path.join(path, "vectors.faiss"), dim=args.dim, factory=None)
    plan = Plan(structure=info["structure"], nprobe=info["params"].get("nprobe"),
                ef_search=info["params"].get("efSearch"))
    apply_search_params(raw, plan, True)
    depth = info["params"].get("rerank", 0)
    table = open_rerank(os.path.join(path, "rerank.vec"), dim=args.dim).data if depth else None

    def raw_search(x: np.ndarray) -> np.ndarray:
        if table is None:
            return raw.search(x, 10)[1]
        _, lab = raw.search(x, 10 * depth)
        found = lab[0][lab[0] >= 0]
        cand = to_float32(table[found])  # same mapping, same precision, same conversion
        return found[np.argsort(-(cand @ x[0]), kind="stable")[:10]]

    raw_search(q[:1])
    med_ours, med_raw = _interleaved_medians([lambda i: ix.search(q[i:i + 1], k=10),
                                              lambda i: raw_search(q[i:i + 1])], n1)
    ix.close()
    after_write = _filter_after_write(path, q)
    return {"reopen_first_s": reopen, "rss_mb": rss, "recall": recall, "qps1": 1 / t_ours, "qps64": qps64,
            "filter_modality_ms": 1000 * med_mod, "filter_where_ms": 1000 * med_where, "anon_mb": anon,
            "modality_ratio": med_mod / med_plain, "first_mod_ms": 1000 * cold_mod,
            "first_where_ms": 1000 * cold_where, "search_ms": 1000 * med_ours, "raw_ms": 1000 * med_raw,
            "after_write_ms": after_write, "overhead": med_ours / med_raw, "structure": info["description"]}


def _mean_s(run, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        run(i)
    return (time.perf_counter() - t0) / n


def _interleaved_medians(runs: list, n: int) -> list[float]:
    """Median seconds of each run(i) over queries i < n, the runs alternating query by query."""
    times: list[list[float]] = [[] for _ in runs]
    for i in range(n):
        for run, out in zip(runs, times):
            t0 = time.perf_counter()
            run(i)
            out.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _filter_after_write(path: str, q: np.ndarray) -> float:
    """ms of a modality-filtered query right after a 64-row write, in a writer that used the filter
    before the write (the last measurement: the writer's close extends the caches)."""
    from mmretrieve.index import UnifiedIndex
    from mmretrieve.testing.vectors import iter_clustered_unit_vectors

    with UnifiedIndex.open(path) as ix:
        ix.search(q[:1], k=10, modality="image")
        extra = next(iter(iter_clustered_unit_vectors(64, q.shape[1], chunk=64, clusters=10, seed=5)))
        ix.add(extra, _records(10**9, 64))
        t0 = time.perf_counter()
        hits = ix.search(q[1:2], k=10, modality="image")[0]
        took = time.perf_counter() - t0
        assert len(hits) == 10 and all(h.modality.value == "image" for h in hits)
    return 1000 * took


# ------------------------------------------------------------------------------------ driver
def _ground_truth(args) -> None:
    """Queries and their exact top-10, in two passes over the generated data (never all in memory)."""
    from mmretrieve.index.tuning import ExactTopK, offset_queries
    from mmretrieve.testing.vectors import iter_clustered_unit_vectors

    rng = np.random.default_rng(123)
    pick = np.sort(rng.choice(args.n, args.queries, replace=False))
    base_q = np.zeros((args.queries, args.dim), np.float32)
    lo = 0
    for vecs in iter_clustered_unit_vectors(args.n, args.dim, chunk=CHUNK, **_data_kwargs(args)):
        inside = (pick >= lo) & (pick < lo + len(vecs))
        base_q[inside] = vecs[pick[inside] - lo]
        lo += len(vecs)
    q = offset_queries(base_q, seed=99)
    exact = ExactTopK(q, 10)
    lo = 0
    for vecs in iter_clustered_unit_vectors(args.n, args.dim, chunk=CHUNK, **_data_kwargs(args)):
        exact.update(np.arange(lo, lo + len(vecs)), vecs)
        lo += len(vecs)
    np.save(os.path.join(args.work, "queries.npy"), q)
    np.save(os.path.join(args.work, "truth.npy"), exact.result())


def _memory_cgroup(limit: int) -> tuple[str, str]:
    """(directory, version) of a new child of this process's memory cgroup capped at ``limit`` bytes
    (page cache included, so mapped index files beyond it are evicted and read again); SystemExit
    when no memory cgroup is writable here."""
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, controllers, rel in lines:
        if "memory" in controllers.split(","):
            base, version, limit_file = os.path.join("/sys/fs/cgroup/memory", rel.lstrip("/")), "v1", "memory.limit_in_bytes"
            break
    else:
        rel = next((r for h, c, r in lines if h == "0" and c == ""), None)
        base, version, limit_file = os.path.join("/sys/fs/cgroup", (rel or "").lstrip("/")), "v2", "memory.max"
    path = os.path.join(base, f"bench_scale_{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, limit_file), "w") as f:
            f.write(str(limit))
    except OSError as exc:
        sys.exit(f"--search-memory needs a writable memory cgroup ({version} at {base}): {exc}")
    return path, version


def _cgroup_peak(path: str, version: str) -> tuple[float, int]:
    """(peak charged GB, times the limit was hit) of a cgroup."""
    def read(name: str) -> int:
        try:
            with open(os.path.join(path, name)) as f:
                text = f.read()
        except OSError:
            return -1
        if name == "memory.events":
            return int(dict(line.split() for line in text.splitlines()).get("max", -1))
        return int(text.split()[0])
    if version == "v1":
        return read("memory.max_usage_in_bytes") / 1e9, read("memory.failcnt")
    return read("memory.peak") / 1e9, read("memory.events")


def _run_worker(args, mode: str, structure: str, cgroup: str | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--structure", structure,
           "--n", str(args.n), "--dim", str(args.dim), "--work", args.work, "--threads", str(args.threads),
           "--batch1", str(args.batch1), "--clusters", str(args.clusters), "--flat-below", str(args.flat_below)]
    if args.max_memory:
        cmd += ["--max-memory", args.max_memory]

    def enter_cgroup() -> None:  # in the child, before it runs anything
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=enter_cgroup if cgroup else None)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} {structure} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_estimate_gb(structure: str, n: int, dim: int) -> float:
    """Estimated peak memory of one worker: a structure holding full vectors keeps a faiss copy beside
    the SQLite pages; a compressed one its codes, the training sample and a build chunk."""
    raw_gb = n * dim * 4 / 1e9
    name, _ = _parse_structure(structure)
    if name == "Flat" or name.endswith(",Flat"):
        return 2.6 * raw_gb + 1.0
    return 0.35 * raw_gb + 2.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--structures", default="Flat;auto;IVF1024,PQ128x4fs;IVF1024,SQ8",
                   help="';'-separated: Flat, auto, or faiss factory strings (tuned)")
    p.add_argument("--max-memory", default=None, help="memory budget for auto (e.g. 8G)")
    p.add_argument("--flat-below", type=int, default=50_000)
    p.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    p.add_argument("--batch1", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--memory-limit", type=float, default=10.0, help="GB; refuse a run estimated above this")
    p.add_argument("--work", default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", choices=("build", "search"), help=argparse.SUPPRESS)
    p.add_argument("--structure", help=argparse.SUPPRESS)
    p.add_argument("--reuse", action="store_true",
                   help="with --work: reuse the ground truth and the indexes an earlier run with --keep left there "
                        "(their build figures are read back), so only the searches run again")
    p.add_argument("--search-memory", default=None,
                   help="run each search worker in a memory cgroup capped at this size (e.g. 4G, page cache "
                        "included): an index whose files exceed it must still answer")
    args = p.parse_args()
    if args.worker:
        print(json.dumps((build if args.worker == "build" else search)(args)))
        return
    from mmretrieve.index.tuning import parse_memory
    raw_gb = args.n * args.dim * 4 / 1e9
    estimate = max(_peak_estimate_gb(s, args.n, args.dim) for s in args.structures.split(";"))
    avail = _mem_available_mb() / 1024
    print(f"memory available {avail:.1f} GB; estimated peak per process {estimate:.1f} GB; raw vectors {raw_gb:.2f} GB")
    if estimate > args.memory_limit or estimate > 0.8 * avail:
        sys.exit(f"refusing: estimated {estimate:.1f} GB exceeds --memory-limit {args.memory_limit} GB "
                 f"or 80% of the {avail:.1f} GB available; use a smaller --n")
    made = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="bench_scale_")
    os.makedirs(args.work, exist_ok=True)
    t0 = time.perf_counter()
    truth_files = [os.path.join(args.work, f) for f in ("queries.npy", "truth.npy")]
    if not (args.reuse and all(map(os.path.exists, truth_files))):
        _ground_truth(args)
    print(f"n={args.n} dim={args.dim} queries={args.queries} (ground truth {time.perf_counter() - t0:.1f} s), "
          f"faiss threads {args.threads}", flush=True)
    rows: list[dict] = []
    limits: list[str] = []
    head = ("| structure | build s | disk B/vector (x raw) | sqlite vec / sqlite meta / faiss / rerank B | "
            "reopen+1st s | RSS MB (anon) | recall@10 | q/s b1 | q/s b64 | search ms (raw) | modality ms (x unfiltered) | "
            "where ms | 1st modality / 1st where ms | filter after write ms | search / raw faiss+re-rank |")
    print(head + "\n|" + "---|" * 15, flush=True)
    for structure in args.structures.split(";"):
        cgroup = None
        try:
            kept = os.path.join(args.work, structure.replace(",", "_").replace("@", "_") + ".build.json")
            path = os.path.join(args.work, structure.replace(",", "_").replace("@", "_"))
            if args.reuse and os.path.exists(kept):
                with open(kept) as f:
                    b = json.load(f)
            elif args.reuse and os.path.isdir(path):  # kept by a run that predates build.json: no build time
                disk = _disk_split(path)
                b = {"build_s": float("nan"), "bytes_per_vector": disk["total"] / args.n,
                     "split": {k: v / args.n for k, v in disk.items()}, "build_peak_rss_mb": float("nan"), "path": path}
            else:
                b = _run_worker(args, "build", structure)
                with open(kept, "w") as f:
                    json.dump(b, f)
            if args.search_memory:
                cgroup = _memory_cgroup(parse_memory(args.search_memory))
            s = _run_worker(args, "search", structure, cgroup[0] if cgroup else None)
        except RuntimeError as exc:
            print(f"| {structure} | failed: {str(exc).splitlines()[-1][:120]} |", flush=True)
            continue
        finally:
            if cgroup:
                peak, hits = _cgroup_peak(*cgroup)
                limits.append(f"{structure}: search worker capped at {args.search_memory} (memory cgroup "
                              f"{cgroup[1]}, page cache included): peak charge {peak:.2f} GB, limit reached "
                              f"{hits} times, index files {_dir_bytes(b['path']) / 1e9:.2f} GB")
                with contextlib.suppress(OSError):
                    os.rmdir(cgroup[0])
        row = {"name": structure, **b, **s}
        rows.append(row)
        raw = 4 * args.dim
        sp = row["split"]
        print(f"| {structure} → {row['structure']} | {row['build_s']:.0f} | {row['bytes_per_vector']:.0f} "
              f"({row['bytes_per_vector'] / raw:.2f}) | {sp['sqlite_vectors']:.0f} / {sp['sqlite_meta']:.0f} / "
              f"{sp['faiss']:.0f} / {sp['rerank']:.0f} | {row['reopen_first_s']:.2f} | {row['rss_mb']:.0f} "
              f"({row['anon_mb']:.0f}) | {row['recall']:.3f} | {row['qps1']:.1f} | {row['qps64']:.1f} | "
              f"{row['search_ms']:.2f} ({row['raw_ms']:.2f}) | {row['filter_modality_ms']:.2f} "
              f"({row['modality_ratio']:.2f}) | {row['filter_where_ms']:.2f} | "
              f"{row['first_mod_ms']:.0f} / {row['first_where_ms']:.0f} | {row['after_write_ms']:.1f} | "
              f"{row['overhead']:.2f} |", flush=True)
        if not args.keep:
            shutil.rmtree(b["path"], ignore_errors=True)
    for line in limits:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if made and not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
