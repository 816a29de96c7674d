"""Cross-modal retrieval metrics with the field's protocols: R@1/5/10, median rank (MdR), mean rank (MnR).

Similarities are exact inner products computed one block of query rows at a time, so a 25,000 x 5,000
evaluation (COCO 5k) never holds the full matrix: at most ``block`` rows x all items are in memory (and
fewer rows when the item set is huge, see ``max_block_elements``).

A query's rank is 1 + the number of non-positive items scoring strictly higher than its best positive,
plus, with ``ties="pessimistic"`` (the default), the number of non-positive items scoring exactly the
same. With real-valued embeddings ties essentially never occur and both policies give the published
numbers; with degenerate embeddings (a collapsed model giving every item the same vector) the pessimistic
policy reports chance-level recall instead of a flattering R@1 = 100.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "similarity_blocks",
    "ranks_of_positives",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "evaluate_pair",
    "format_table",
]

DEFAULT_KS = (1, 5, 10)
_MAX_BLOCK_ELEMENTS = 1 << 24  # 16M float32 = 64 MB per block


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, D) array, got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: no rows")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected floating point embeddings, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _check_dims(q: np.ndarray, items: np.ndarray) -> None:
    if q.shape[1] != items.shape[1]:
        raise ValueError(f"query_emb has dimension {q.shape[1]} but item_emb has {items.shape[1]}")


def similarity_blocks(
    queries: Any, items: Any, block: int = 4096, *, max_block_elements: int = _MAX_BLOCK_ELEMENTS
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, sims)`` with ``sims = queries[start:start+b] @ items.T`` (float32, exact), covering
    all query rows in order; ``b`` = ``block`` rows, fewer if b x n_items would exceed ``max_block_elements``."""
    q = _as_matrix(queries, "queries")
    it = _as_matrix(items, "items")
    _check_dims(q, it)
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    rows = max(1, min(block, max_block_elements // max(1, it.shape[0])))
    for start in range(0, q.shape[0], rows):
        yield start, q[start:start + rows] @ it.T


def _csr(positives: Sequence[Sequence[int]], n_items: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(p) for p in positives), dtype=np.int64, count=len(positives))
    if (lengths == 0).any():
        bad = np.flatnonzero(lengths == 0)[:10].tolist()
        raise ValueError(f"{name}: queries {bad} have no positive item")
    flat = np.fromiter((int(i) for p in positives for i in p), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"{name}: positive indices must be in [0, {n_items}); got {flat.min()}..{flat.max()}")
    offsets = np.zeros(len(positives) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return flat, offsets


def ranks_of_positives(
    query_emb: Any,
    item_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    block: int = 4096,
    ties: str = "pessimistic",
) -> np.ndarray:
    """1-based rank of each query's best positive item (int64 array, one per query)."""
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties={ties!r}: choose 'pessimistic' or 'optimistic'")
    q = _as_matrix(query_emb, "query_emb")
    items = _as_matrix(item_emb, "item_emb")
    _check_dims(q, items)
    if len(positives) != q.shape[0]:
        raise ValueError(f"positives has {len(positives)} entries for {q.shape[0]} queries")
    flat, offsets = _csr(positives, items.shape[0], "positives")
    ranks = np.empty(q.shape[0], dtype=np.int64)
    for start, sims in similarity_blocks(q, items, block):
        n = sims.shape[0]
        lo, hi = offsets[start], offsets[start + n]
        cols = flat[lo:hi]
        rows = np.repeat(np.arange(n), np.diff(offsets[start:start + n + 1]))
        pos_scores = sims[rows, cols]
        starts = offsets[start:start + n] - lo
        best = np.maximum.reduceat(pos_scores, starts)
        higher = (sims > best[:, None]).sum(axis=1)  # positives never exceed the best positive
        rank = 1 + higher
        if ties == "pessimistic":
            equal = (sims == best[:, None]).sum(axis=1)
            equal_pos = np.add.reduceat((pos_scores == best[rows]).astype(np.int64), starts)
            rank += equal - equal_pos
        ranks[start:start + n] = rank
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@k in percent, median rank (MdR) and mean rank (MnR) from 1-based ranks."""
    r = np.asarray(ranks)
    out: dict[str, float] = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    out["queries"] = int(r.size)
    return out


def retrieval_metrics(
    query_emb: Any,
    item_emb: Any,
    query_to_item: Sequence[int],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Metrics when each query has ONE correct item, ``query_to_item[i]`` (e.g. text->image on COCO:
    25,000 captions, each pointing at its image)."""
    return metrics_from_ranks(
        ranks_of_positives(query_emb, item_emb, [(int(i),) for i in query_to_item], block=block, ties=ties), ks
    )


def retrieval_metrics_multi(
    query_emb: Any,
    item_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Metrics when a query has several correct items (image->text on COCO: any of the image's five
    captions counts); the rank is that of the best-ranked positive."""
    return metrics_from_ranks(ranks_of_positives(query_emb, item_emb, positives, block=block, ties=ties), ks)


def evaluate_pair(
    text_emb: Any,
    item_emb: Any,
    caption_to_item: Sequence[int],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
) -> dict[str, dict[str, float]]:
    """Both directions: ``t2x`` (every caption queries the items) and ``x2t`` (every item queries the
    captions; a hit if any of its captions is retrieved). ``caption_to_item[i]`` is caption i's item."""
    owners = np.asarray([int(i) for i in caption_to_item], dtype=np.int64)
    n_items = _as_matrix(item_emb, "item_emb").shape[0]
    if owners.size and (owners.min() < 0 or owners.max() >= n_items):
        raise ValueError(f"caption_to_item: indices must be in [0, {n_items})")
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(n_items + 1))
    captions_of = [order[bounds[j]:bounds[j + 1]] for j in range(n_items)]
    empty = [j for j, c in enumerate(captions_of) if c.size == 0]
    if empty:
        raise ValueError(f"caption_to_item: items {empty[:10]} have no caption; drop them before evaluating")
    return {
        "t2x": retrieval_metrics(text_emb, item_emb, owners, block=block, ks=ks, ties=ties),
        "x2t": retrieval_metrics_multi(item_emb, text_emb, captions_of, block=block, ks=ks, ties=ties),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{float(value):.1f}"


def format_table(results: dict) -> str:
    """Aligned text table of ``evaluate_pair`` output (one row per direction), or of any mapping
    ``{row_name: {metric: value}}``; a single metrics dict is shown as one row."""
    if results and all(not isinstance(v, dict) for v in results.values()):
        results = {"": results}
    names = {"t2x": "text->item", "x2t": "item->text"}
    columns: list[str] = []
    for row in results.values():
        for key in row:
            if key not in columns:
                columns.append(key)
    header = ["direction"] + columns
    body = [[names.get(k, k)] + [_fmt(row[c]) if c in row else "" for c in columns] for k, row in results.items()]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
