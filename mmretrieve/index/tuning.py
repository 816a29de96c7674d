"""Choosing and tuning the faiss structure of an index: which structure for a count, a dimension
and a memory budget, and which nprobe / efSearch reaches a recall target.

Tuning measures recall@10 against exact search on held-out queries built like text queries: a
stored vector moved along one fixed direction (the modality gap between text and image vectors)
plus noise, so the queries sit as far from the stored vectors as real cross-modal queries do.
Candidates are re-ranked with the exact stored vectors, exactly as ``UnifiedIndex.search`` does, so
the recall measured is the recall served. A structure that cannot reach its target is never used:
the plan falls back to exact search and says why.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import faiss
import numpy as np

__all__ = ["AUTO", "TuningConfig", "Plan", "parse_memory", "candidate_structures", "estimate_memory",
           "offset_queries", "recall_at", "ExactTopK", "apply_search_params", "tune_structure",
           "initial_plan", "TUNE_K", "TUNE_SEED", "exact_codes"]

AUTO = "auto"
TUNE_K = 10  # recall@10 is what the target means
_GAP_SEED = 20_261_129
TUNE_SEED = 7_919_003  # noise of the tuning queries: a stream no data generator of ours starts with
_FIRST_TUNING = 1000  # a given factory string is first tuned at this many entries


@dataclass(frozen=True)
class TuningConfig:
    """How an index chooses and tunes its structure (stored with the index).

    target_recall: recall@10 against exact search the tuned structure must reach.
    max_memory: bytes the faiss structure may take in memory (None: 30 % of the raw vectors).
    tune: tune nprobe / efSearch (a user-given factory string too); False keeps faiss's defaults.
    rerank: re-score at least this many candidates per requested hit with the stored vectors (0: off);
        tuning also tries 2, 4 and 8 times as many and keeps the fastest depth that reaches the target.
    rerank_dtype: precision of the re-rank copy of the vectors ("float16": half the bytes, "float32").
    flat_below: ``auto`` stays exact (Flat) while the index holds fewer entries than this.
    growth: re-choose when the index has grown this many times past the count of the last choice.
    queries: held-out queries used for tuning.
    """
    target_recall: float = 0.95
    max_memory: int | None = None
    tune: bool = True
    rerank: int = 10
    rerank_dtype: str = "float16"
    flat_below: int = 50_000
    growth: float = 4.0
    queries: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < float(self.target_recall) <= 1.0:
            raise ValueError(f"target_recall={self.target_recall!r} must be in (0, 1]")
        if self.max_memory is not None and (isinstance(self.max_memory, bool) or int(self.max_memory) <= 0):
            raise ValueError(f"max_memory={self.max_memory!r} must be a positive number of bytes")
        if int(self.rerank) < 0:
            raise ValueError(f"rerank={self.rerank!r} must be >= 0")
        if self.rerank_dtype not in ("float16", "float32"):
            raise ValueError(f"rerank_dtype={self.rerank_dtype!r} must be 'float16' or 'float32'")
        if int(self.flat_below) < 0 or float(self.growth) <= 1.0 or int(self.queries) < 10:
            raise ValueError("flat_below must be >= 0, growth > 1 and queries >= 10")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "TuningConfig":
        if not text:
            return cls()
        body = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})


@dataclass(frozen=True)
class Plan:
    """The faiss structure an index serves with, its search parameters and how it was chosen.

    structure: faiss factory string actually built ("Flat" when exact).
    nprobe / ef_search: tuned search parameters (None: not tuned).
    rerank: candidates per requested hit re-scored with the stored vectors (0: none), in
        rerank_dtype precision (plans made before the re-rank file existed re-scored float32).
    recall: recall@10 measured on held-out offset queries (None: not measured).
    count: entries when the plan was made; next_at: count at which it is re-chosen (None: never).
    note: why this plan (a fallback says which structure failed and the recall it reached).
    """
    structure: str = "Flat"
    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int = 0
    rerank_dtype: str = "float32"
    recall: float | None = None
    target: float | None = None
    count: int = 0
    next_at: int | None = None
    fallback: bool = False
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.structure.strip() == "Flat"

    @property
    def tuned(self) -> bool:
        return self.nprobe is not None or self.ef_search is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        body = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})

    def describe(self) -> str:
        parts = [self.structure]
        if self.nprobe is not None:
            parts.append(f"nprobe={self.nprobe}")
        if self.ef_search is not None:
            parts.append(f"efSearch={self.ef_search}")
        if self.rerank:
            parts.append(f"re-rank x{self.rerank} {self.rerank_dtype}")
        if self.recall is not None:
            parts.append(f"recall@10={self.recall:.3f} (target {self.target:.2f}, {self.count} entries)")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)


def parse_memory(text: str | int | None) -> int | None:
    """'8G', '512M', '1.5GiB', 123456 -> bytes; None stays None."""
    if text is None or isinstance(text, int):
        return text
    s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    mult = 1
    if s and s[-1] in scale:
        mult, s = scale[s[-1]], s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise ValueError(f"memory size {text!r} is not a number of bytes such as 8G or 512M") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


def exact_codes(structure: str) -> bool:
    """True when the structure keeps the float32 vectors themselves (``Flat``, ``IVF..,Flat``,
    ``HNSW..,Flat``): its scores are already exact, re-ranking could only round them."""
    return structure.split(",")[-1].strip() == "Flat"


def initial_plan(factory: str, config: TuningConfig) -> Plan:
    """The plan of a new, empty index."""
    if factory == AUTO:
        return Plan("Flat", count=0, next_at=max(config.flat_below, 1), note="exact while small")
    flat = factory.strip() == "Flat"
    if flat:
        note = ""
    elif config.tune:
        note = f"not tuned yet (at {_FIRST_TUNING} entries): searches every list / a wide beam"
    else:
        note = "not tuned (tune=False): faiss default search parameters"
    return Plan(factory, rerank=0 if exact_codes(factory) else config.rerank, rerank_dtype=config.rerank_dtype, count=0,
                next_at=(_FIRST_TUNING if config.tune and not flat else None), note=note,
                target=config.target_recall if config.tune else None)


def _nlist(n: int) -> int:
    return int(min(65536, max(16, 2 ** round(math.log2(max(math.sqrt(n), 1))))))


def _pq_m(d: int, dims_per_code: int) -> int:
    """Sub-quantizers for 4-bit fast-scan PQ: about d/dims_per_code, dividing d, even (0: none)."""
    for m in range(max(d // dims_per_code, 2), 1, -1):
        if d % m == 0 and m % 2 == 0:
            return m
    return 0


def estimate_memory(structure: str, n: int, d: int) -> int:
    """Approximate bytes of an IndexIDMap2 over ``structure`` holding n vectors of dimension d."""
    ids = 16  # id map + inverted-list ids
    head = structure.split(",")[0]
    nlist = int(head[3:]) if head.startswith("IVF") else 0
    body = structure.split(",")[-1]
    if structure.startswith("HNSW"):
        m = int(head[4:] or 32)
        per = (4 * d if body == "Flat" else d) + int(m * 2 * 4 * 1.1)
    elif body == "SQ8":
        per = d
    elif body == "SQfp16":
        per = 2 * d
    elif body.startswith("PQ"):
        code = body[2:].split("x")
        m = int(code[0])
        bits = int(code[1].rstrip("fs")) if len(code) > 1 else 8
        per = (m * bits + 7) // 8
    else:
        per = 4 * d
    return n * (per + ids) + nlist * d * 4


def candidate_structures(n: int, d: int, max_memory: int | None) -> list[str]:
    """Approximate structures worth trying for n vectors of dimension d within max_memory bytes, in
    the order they are tried: fastest first, then ever larger codes (more accurate, more memory).
    None budget: 30 % of the raw float32 vectors (every compressed structure, no HNSW)."""
    budget = max_memory if max_memory is not None else max(int(1.2 * n * d), 1 << 20)
    nlist = _nlist(n)
    out = []
    if n <= 2_000_000:
        out.append("HNSW32,Flat")
    for per in (4, 2):
        m = _pq_m(d, per)
        if m and f"IVF{nlist},PQ{m}x4fs" not in out:
            out.append(f"IVF{nlist},PQ{m}x4fs")
    out.append(f"IVF{nlist},SQ8")
    return [s for s in out if estimate_memory(s, n, d) <= budget]


def offset_queries(base: np.ndarray, seed: int = 0) -> np.ndarray:
    """Queries like text queries against image vectors: each base vector moved along one fixed
    direction (the modality gap) plus noise, renormalised (cosine to its base about 0.5)."""
    rng = np.random.default_rng(seed)
    d = base.shape[1]
    gap = np.random.default_rng(_GAP_SEED).standard_normal(d).astype(np.float32)
    gap /= np.linalg.norm(gap)
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = 0.55 * base + 0.6 * gap + 0.58 * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


class ExactTopK:
    """Running exact top-k of fixed queries over vectors seen in chunks (the ground truth)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q, self.k = queries, k
        self.d = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.i = np.zeros((len(queries), 0), dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = self.q @ vectors.T
        d = np.concatenate([self.d, scores], axis=1)
        i = np.concatenate([self.i, np.broadcast_to(ids, scores.shape)], axis=1)
        if d.shape[1] > self.k:
            part = np.argpartition(-d, self.k - 1, axis=1)[:, :self.k]
            d, i = np.take_along_axis(d, part, axis=1), np.take_along_axis(i, part, axis=1)
        self.d, self.i = d, i

    def result(self) -> np.ndarray:
        order = np.argsort(-self.d, axis=1, kind="stable")
        return np.take_along_axis(self.i, order, axis=1)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = TUNE_K) -> float:
    """|found[:k] ∩ truth[:k]| summed over queries, over the true neighbours there are (k per query,
    fewer when the index holds fewer than k entries: truth padded with -1)."""
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth))
    want = sum(int((np.asarray(t[:k]) >= 0).sum()) for t in truth)
    return hits / want if want else 1.0


def apply_search_params(index: faiss.Index, plan: Plan, tune: bool) -> None:
    """Set the plan's nprobe / efSearch on the index (exhaustive-ish until tuned when tuning is on)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        if plan.nprobe is not None:
            ivf.nprobe = int(min(plan.nprobe, ivf.nlist))
        elif tune:
            ivf.nprobe = int(ivf.nlist)
        return
    inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
    if isinstance(inner, faiss.IndexHNSW):
        if plan.ef_search is not None:
            inner.hnsw.efSearch = int(plan.ef_search)
        elif tune:
            inner.hnsw.efSearch = 512


Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def tune_structure(index: faiss.IndexIDMap2, queries: np.ndarray, truth: np.ndarray, target: float,
                   search: Searcher) -> tuple[str | None, int | None, float]:
    """Smallest nprobe (IVF) or efSearch (HNSW) whose served recall@10 reaches ``target`` on the first
    half of the queries, raised until the second (held-out) half reaches it too.

    ``search(queries, k)`` runs the full served search (candidates + exact re-rank) on ``index`` as
    currently parameterised. Returns (parameter name, value, recall: the lower of the two halves);
    the value is None when even the largest setting misses the target (recall: the best reached)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    inner = faiss.downcast_index(index.index)
    half = max(len(queries) // 2, 1)
    tune_q, tune_t, check_q, check_t = queries[:half], truth[:half], queries[half:], truth[half:]

    def measure(q: np.ndarray, t: np.ndarray) -> float:
        return recall_at(search(q, TUNE_K)[1], t) if len(q) else 1.0

    if ivf is not None:
        name, top = "nprobe", int(ivf.nlist)

        def set_value(v: int) -> None:
            ivf.nprobe = v
    elif isinstance(inner, faiss.IndexHNSW):
        name, top = "efSearch", 2048

        def set_value(v: int) -> None:
            inner.hnsw.efSearch = v
    else:
        return None, None, min(measure(tune_q, tune_t), measure(check_q, check_t))
    values = []
    v = 1 if name == "nprobe" else 16
    while v < top:
        values.append(v)
        v *= 2
    values.append(top)
    best, lo, found = 0.0, 0, None
    for v in values:
        set_value(v)
        r = measure(tune_q, tune_t)
        best = max(best, r)
        if r >= target:
            hi, hi_r = v, r  # refine between the previous (failing) value and this one
            while hi - lo > max(1, hi // 8):
                mid = (lo + hi) // 2
                set_value(mid)
                mr = measure(tune_q, tune_t)
                if mr >= target:
                    hi, hi_r = mid, mr
                else:
                    lo = mid
            found = hi
            break
        lo = v
    if found is None:
        return name, None, best
    while True:  # the held-out half must reach the target too
        set_value(found)
        r_tune, r_check = measure(tune_q, tune_t), measure(check_q, check_t)
        if min(r_tune, r_check) >= target:
            return name, found, min(r_tune, r_check)
        if found >= top:
            return name, None, min(r_tune, r_check)
        found = min(top, max(found + 1, int(math.ceil(found * 1.5))))


def plan_fields(name: str | None, value: int | None) -> dict[str, Any]:
    return {"nprobe": value} if name == "nprobe" else {"ef_search": value} if name == "efSearch" else {}
