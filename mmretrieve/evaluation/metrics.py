"""Cross-modal retrieval metrics with the field's conventions: R@1/5/10, median rank (MdR), mean rank
(MnR) and mAP@10.

Similarities are exact inner products computed one block of query rows at a time, so a 25,000 x 5,000
evaluation (COCO 5k) never holds the full matrix: at most ``block`` rows x all items are in memory (and
fewer rows when the item set is huge, see ``max_block_elements``).

Every convention that changes a published figure is a named option (``CONVENTIONS`` describes each):

- ``ties``: where items scoring exactly the same as a positive are placed. ``item-order`` (default):
  the lower item index ranks first, as a stable descending sort does (open_clip's ``get_clip_metrics``,
  LAION-CLAP). ``pessimistic``: every tied non-positive ranks before the positive (a collapsed model
  giving every item the same vector gets chance-level recall). ``optimistic``: tied non-positives rank
  after it. With real-valued embeddings ties essentially never occur and the three agree.
- ``median``: ``floor`` (default): MdR = floor(median of the 0-based ranks) + 1, as open_clip and
  LAION-CLAP report it (always a whole number). ``midpoint``: the median of the 1-based ranks,
  ``np.median`` as CLIP4Clip's ``compute_metrics`` does (x.5 for an even number of queries).
- ``x2t`` (item -> text when an item has several captions): ``any-caption`` (default): each item ranks
  every caption and its rank is that of its best-ranked own caption (COCO 5k image->text, Clotho
  audio->text, open_clip, LAION-CLAP). ``best-caption``: CLIP4Clip's multi-sentence video->text: each
  candidate item is represented by its best-matching caption, so a video competes against the other
  videos, not against all their sentences.
- mAP@10: per query, AP@10 = sum over its positives ranked in the top 10 of (i / rank_i), i = 1, 2, ... in
  rank order, divided by min(number of positives, 10); averaged over queries. With one positive this is
  1/rank (0 beyond 10); with five captions per clip it is the Clotho / DCASE audio->text mAP@10 that
  LAION-CLAP selects checkpoints with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "TIES",
    "MEDIANS",
    "X2T",
    "CONVENTIONS",
    "PositiveRanks",
    "similarity_blocks",
    "positive_ranks",
    "ranks_of_positives",
    "median_rank",
    "mean_average_precision",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "retrieval_metrics_grouped",
    "evaluate_pair",
    "describe_conventions",
    "format_table",
]

DEFAULT_KS = (1, 5, 10)
MAP_K = 10
TIES = ("item-order", "pessimistic", "optimistic")
MEDIANS = ("floor", "midpoint")
X2T = ("any-caption", "best-caption")
CONVENTIONS: dict[str, dict[str, str]] = {
    "ties": {
        "item-order": "ties broken by item order, lower index first (open_clip, LAION-CLAP)",
        "pessimistic": "tied non-positives ranked before the positive (worst case)",
        "optimistic": "tied non-positives ranked after the positive (best case)",
    },
    "median": {
        "floor": "MdR = floor(median of 0-based ranks) + 1 (open_clip, LAION-CLAP)",
        "midpoint": "MdR = median of 1-based ranks, may be x.5 (CLIP4Clip compute_metrics)",
    },
    "x2t": {
        "any-caption": "item->text rank = best rank of any own caption among all captions (COCO, Clotho, open_clip)",
        "best-caption": "item->text ranks items' caption sets, each scored by its best caption (CLIP4Clip multi-sentence)",
    },
    "map": {
        "dcase": f"mAP@{MAP_K} = mean over queries of sum_i (i / rank_i) over positives in the top {MAP_K}, "
                 f"/ min(#positives, {MAP_K}) (DCASE, LAION-CLAP)",
    },
}
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


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {', '.join(repr(c) for c in choices)}")


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
    for q in range(len(positives)):  # a repeated positive would be counted twice by mAP
        row = flat[offsets[q]:offsets[q + 1]]
        if row.size > 1 and np.unique(row).size != row.size:
            raise ValueError(f"{name}: query {q} lists a positive item more than once ({row.tolist()})")
    return flat, offsets


@dataclass(frozen=True)
class PositiveRanks:
    """1-based rank of every positive of every query, ascending within a query (CSR layout:
    query ``q``'s ranks are ``ranks[offsets[q]:offsets[q + 1]]``)."""

    ranks: np.ndarray
    offsets: np.ndarray

    @property
    def best(self) -> np.ndarray:
        """Rank of each query's best-ranked positive."""
        return self.ranks[self.offsets[:-1]]

    def of(self, query: int) -> np.ndarray:
        return self.ranks[self.offsets[query]:self.offsets[query + 1]]


def _block_positive_ranks(sims: np.ndarray, cols: np.ndarray, counts: np.ndarray, ties: str) -> np.ndarray:
    """0-based positions of the positives ``cols`` (grouped per row, ``counts`` per row) in each row's
    descending order under the ``ties`` policy; same layout as ``cols``."""
    n, m = sims.shape
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    rows = np.repeat(np.arange(n), counts)
    slot = np.arange(cols.size) - np.repeat(starts, counts)
    scores = sims[rows, cols]
    kmax = int(counts.max())
    pad_scores = np.full((n, kmax), np.nan, dtype=np.float32)  # NaN never equals a score
    pad_cols = np.full((n, kmax), -1, dtype=np.int64)
    pad_scores[rows, slot] = scores
    pad_cols[rows, slot] = cols
    item_index = np.arange(m)
    out = np.empty(cols.size, dtype=np.int64)
    for k in range(kmax):
        sel = np.flatnonzero(slot == k)
        r, c, s = rows[sel], cols[sel], scores[sel]
        block = sims if r.size == n else sims[r]  # every row has a k-th positive: no copy
        higher = (block > s[:, None]).sum(axis=1)
        equal = block == s[:, None]
        n_equal = equal.sum(axis=1) - 1  # other items scoring exactly the positive's score
        # positives of the same row tied with this one, and how many of them have a lower index
        same = pad_scores[r] == s[:, None]
        pos_tied = same.sum(axis=1) - 1
        pos_tied_before = (same & (pad_cols[r] < c[:, None])).sum(axis=1)
        if ties == "item-order":
            before = np.zeros(r.size, dtype=np.int64)
            tied_rows = np.flatnonzero(n_equal > 0)
            if tied_rows.size:
                before[tied_rows] = (equal[tied_rows] & (item_index[None, :] < c[tied_rows, None])).sum(axis=1)
            pos = higher + before
        elif ties == "pessimistic":
            pos = higher + (n_equal - pos_tied) + pos_tied_before
        else:
            pos = higher + pos_tied_before
        out[sel] = pos
    return out


def _ranks_from_blocks(blocks: Iterator[tuple[int, np.ndarray]], flat: np.ndarray, offsets: np.ndarray,
                       ties: str) -> PositiveRanks:
    ranks = np.empty(flat.size, dtype=np.int64)
    for start, sims in blocks:
        n = sims.shape[0]
        lo, hi = offsets[start], offsets[start + n]
        counts = np.diff(offsets[start:start + n + 1])
        ranks[lo:hi] = 1 + _block_positive_ranks(sims, flat[lo:hi], counts, ties)
    # ascending within each query
    owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    order = np.lexsort((ranks, owner))
    return PositiveRanks(ranks[order], offsets)


def positive_ranks(
    query_emb: Any,
    item_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    block: int = 4096,
    ties: str = "item-order",
) -> PositiveRanks:
    """The rank of every positive item of every query (see :class:`PositiveRanks`)."""
    _check_choice("ties", ties, TIES)
    q = _as_matrix(query_emb, "query_emb")
    items = _as_matrix(item_emb, "item_emb")
    _check_dims(q, items)
    if len(positives) != q.shape[0]:
        raise ValueError(f"positives has {len(positives)} entries for {q.shape[0]} queries")
    flat, offsets = _csr(positives, items.shape[0], "positives")
    return _ranks_from_blocks(similarity_blocks(q, items, block), flat, offsets, ties)


def ranks_of_positives(
    query_emb: Any,
    item_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    block: int = 4096,
    ties: str = "item-order",
) -> np.ndarray:
    """1-based rank of each query's best positive item (int64 array, one per query)."""
    return positive_ranks(query_emb, item_emb, positives, block=block, ties=ties).best


def median_rank(ranks: np.ndarray, median: str = "floor") -> float:
    """MdR of 1-based ranks under the ``median`` convention (``floor`` or ``midpoint``)."""
    _check_choice("median", median, MEDIANS)
    r = np.asarray(ranks, dtype=np.float64)
    if median == "floor":
        return float(np.floor(np.median(r - 1)) + 1)
    return float(np.median(r))


def mean_average_precision(ranks: PositiveRanks, k: int = MAP_K) -> float:
    """mAP@k in percent (see the module docstring for the definition)."""
    r = ranks.ranks
    counts = np.diff(ranks.offsets)
    owner = np.repeat(np.arange(counts.size), counts)
    i = 1 + np.arange(r.size) - np.repeat(ranks.offsets[:-1], counts)  # 1, 2, ... within a query
    contrib = np.where(r <= k, i / r, 0.0)
    ap = np.bincount(owner, weights=contrib, minlength=counts.size) / np.minimum(counts, k)
    return float(100.0 * ap.mean())


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, *, median: str = "floor") -> dict[str, float]:
    """R@k in percent, median rank (MdR, ``median`` convention) and mean rank (MnR) from 1-based ranks."""
    r = np.asarray(ranks)
    out: dict[str, float] = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    out["MdR"] = median_rank(r, median)
    out["MnR"] = float(np.mean(r))
    out["queries"] = int(r.size)
    return out


def _metrics(pr: PositiveRanks, ks: Sequence[int], median: str) -> dict[str, float]:
    out = metrics_from_ranks(pr.best, ks, median=median)
    queries = out.pop("queries")
    out[f"mAP@{MAP_K}"] = mean_average_precision(pr, MAP_K)
    out["queries"] = queries
    return out


def retrieval_metrics(
    query_emb: Any,
    item_emb: Any,
    query_to_item: Sequence[int],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "item-order",
    median: str = "floor",
) -> dict[str, float]:
    """Metrics when each query has ONE correct item, ``query_to_item[i]`` (e.g. text->image on COCO:
    25,000 captions, each pointing at its image)."""
    pr = positive_ranks(query_emb, item_emb, [(int(i),) for i in query_to_item], block=block, ties=ties)
    return _metrics(pr, ks, median)


def retrieval_metrics_multi(
    query_emb: Any,
    item_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "item-order",
    median: str = "floor",
) -> dict[str, float]:
    """Metrics when a query has several correct items (image->text on COCO: any of the image's five
    captions counts); R@k, MdR and MnR use the best-ranked positive, mAP@10 all of them."""
    pr = positive_ranks(query_emb, item_emb, positives, block=block, ties=ties)
    return _metrics(pr, ks, median)


def _groups(owners: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(n_groups + 1))
    return order, bounds


def retrieval_metrics_grouped(
    item_emb: Any,
    text_emb: Any,
    caption_to_item: Sequence[int],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "item-order",
    median: str = "floor",
) -> dict[str, float]:
    """Item->text with CLIP4Clip's multi-sentence convention: item ``j`` scores each item ``i`` by the
    best similarity between ``j`` and one of ``i``'s captions, and ranks ``j`` itself among all items."""
    items = _as_matrix(item_emb, "item_emb")
    texts = _as_matrix(text_emb, "text_emb")
    _check_dims(items, texts)
    owners = _owners(caption_to_item, items.shape[0], texts.shape[0])
    order, bounds = _groups(owners, items.shape[0])
    in_order = bool(np.all(order == np.arange(order.size)))

    def grouped() -> Iterator[tuple[int, np.ndarray]]:
        # rows x captions -> rows x items; bounded by max_block_elements over the caption count
        for start, sims in similarity_blocks(items, texts, block):
            yield start, np.maximum.reduceat(sims if in_order else sims[:, order], bounds[:-1], axis=1)

    n = items.shape[0]
    pr = _ranks_from_blocks(grouped(), np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64), ties)
    return _metrics(pr, ks, median)


def _owners(caption_to_item: Sequence[int], n_items: int, n_captions: int | None = None) -> np.ndarray:
    owners = np.asarray([int(i) for i in caption_to_item], dtype=np.int64)
    if n_captions is not None and owners.size != n_captions:
        raise ValueError(f"caption_to_item has {owners.size} entries for {n_captions} captions")
    if owners.size and (owners.min() < 0 or owners.max() >= n_items):
        raise ValueError(f"caption_to_item: indices must be in [0, {n_items})")
    counts = np.bincount(owners, minlength=n_items)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"caption_to_item: items {empty[:10].tolist()} have no caption; drop them before evaluating")
    return owners


def evaluate_pair(
    text_emb: Any,
    item_emb: Any,
    caption_to_item: Sequence[int],
    *,
    block: int = 4096,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "item-order",
    median: str = "floor",
    x2t: str = "any-caption",
) -> dict[str, dict[str, float]]:
    """Both directions: ``t2x`` (every caption queries the items) and ``x2t`` (every item queries the
    captions, ``x2t`` convention). ``caption_to_item[i]`` is caption i's item."""
    _check_choice("ties", ties, TIES)
    _check_choice("median", median, MEDIANS)
    _check_choice("x2t", x2t, X2T)
    n_items = _as_matrix(item_emb, "item_emb").shape[0]
    owners = _owners(caption_to_item, n_items)
    if x2t == "best-caption":
        back = retrieval_metrics_grouped(item_emb, text_emb, owners, block=block, ks=ks, ties=ties, median=median)
    else:
        order, bounds = _groups(owners, n_items)
        captions_of = [order[bounds[j]:bounds[j + 1]] for j in range(n_items)]
        back = retrieval_metrics_multi(item_emb, text_emb, captions_of, block=block, ks=ks, ties=ties, median=median)
    return {
        "t2x": retrieval_metrics(text_emb, item_emb, owners, block=block, ks=ks, ties=ties, median=median),
        "x2t": back,
    }


def describe_conventions(ties: str = "item-order", median: str = "floor", x2t: str = "any-caption") -> dict[str, str]:
    """``{convention: "name: description"}`` for reports and result files."""
    _check_choice("ties", ties, TIES)
    _check_choice("median", median, MEDIANS)
    _check_choice("x2t", x2t, X2T)
    chosen = {"ties": ties, "median": median, "x2t": x2t, "map": "dcase"}
    return {k: f"{v}: {CONVENTIONS[k][v]}" for k, v in chosen.items()}


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
