"""One test per reference convention, on small hand-made similarity matrices.

Every query's similarities are written out (items are one-hot, so ``query @ items.T`` is the matrix as
written) and every expected value was worked out by hand; the comments show the arithmetic.
"""
from __future__ import annotations

import numpy as np
import pytest

from metric_helpers import exact_sims

from mmretrieve.evaluation import (
    describe_conventions,
    evaluate_pair,
    format_table,
    metrics_from_ranks,
    positive_ranks,
    ranks_of_positives,
    retrieval_metrics,
    retrieval_metrics_multi,
)


# 3 queries x 4 items, with ties
TIED = [
    [0.5, 0.5, 0.5, 0.5],  # positive 2: items 0 and 1 tie with it
    [0.2, 0.9, 0.9, 0.1],  # positive 1: item 2 ties with it, from a higher index
    [0.9, 0.3, 0.3, 0.3],  # positive 3: item 0 higher, items 1 and 2 tie with it from lower indices
]
TIED_POSITIVES = [2, 1, 3]


def test_ties_item_order_as_open_clip():
    q, items = exact_sims(TIED)
    # q0: 0 higher + 2 tied before (items 0, 1) -> 3; q1: item 2 comes after item 1 -> 1; q2: 1 + 2 -> 4
    assert ranks_of_positives(q, items, [[p] for p in TIED_POSITIVES]).tolist() == [3, 1, 4]
    m = retrieval_metrics(q, items, TIED_POSITIVES)
    assert m["R@1"] == pytest.approx(100 / 3) and m["MnR"] == pytest.approx(8 / 3)


def test_ties_pessimistic_option():
    q, items = exact_sims(TIED)
    # every tied non-positive first: q0 3 tied -> 4; q1 item 2 -> 2; q2 1 higher + 2 tied -> 4
    assert ranks_of_positives(q, items, [[p] for p in TIED_POSITIVES], ties="pessimistic").tolist() == [4, 2, 4]


def test_ties_optimistic_option():
    q, items = exact_sims(TIED)
    # tied non-positives after: q0 -> 1; q1 -> 1; q2 only item 0 is higher -> 2
    assert ranks_of_positives(q, items, [[p] for p in TIED_POSITIVES], ties="optimistic").tolist() == [1, 1, 2]


# 4 queries x 10 items; positive item 0 ranked 1st, 2nd, 3rd and 10th
RANKED = [
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # rank 1
    [0.8, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # rank 2
    [0.7, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # rank 3
    [0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # rank 10
]


def test_median_rank_floor_as_open_clip_and_clap():
    q, items = exact_sims(RANKED)
    m = retrieval_metrics(q, items, [0, 0, 0, 0])
    # 0-based ranks 0, 1, 2, 9: median 1.5, floor 1, + 1 = 2
    assert m["MdR"] == 2.0
    assert m["MnR"] == pytest.approx((1 + 2 + 3 + 10) / 4)
    assert m["R@1"] == 25.0 and m["R@5"] == 75.0 and m["R@10"] == 100.0


def test_median_rank_midpoint_as_clip4clip():
    q, items = exact_sims(RANKED)
    # np.median of 1-based ranks 1, 2, 3, 10 = (2 + 3) / 2
    assert retrieval_metrics(q, items, [0, 0, 0, 0], median="midpoint")["MdR"] == 2.5
    assert metrics_from_ranks(np.array([1, 2, 3, 10]), median="midpoint")["MdR"] == 2.5
    assert metrics_from_ranks(np.array([1, 2, 3]), median="midpoint")["MdR"] == 2.0  # odd count: the middle one


def test_map_at_10_single_positive():
    # 1 positive per query (text->audio on Clotho): AP@10 = 1 / rank, 0 beyond rank 10
    q, items = exact_sims(RANKED)
    m = retrieval_metrics(q, items, [0, 0, 0, 0])
    # (1/1 + 1/2 + 1/3 + 1/10) / 4 = (60 + 30 + 20 + 6) / 60 / 4 = 116 / 240
    assert m["mAP@10"] == pytest.approx(100 * 116 / 240)
    beyond = np.zeros((1, 11), np.float32)
    beyond[0] = [0.0] + [1.0 - 0.05 * j for j in range(10)]  # positive item 0 after ten higher items: rank 11
    q11, items11 = exact_sims(beyond)
    m11 = retrieval_metrics(q11, items11, [0])
    assert m11["mAP@10"] == 0.0 and m11["R@10"] == 0.0 and m11["MdR"] == 11.0


# 2 audio clips x 20 captions, 5 positives each (audio->text on Clotho, image->text on COCO)
def _ranked_row(n: int, positives: list[int], ranks: list[int]) -> list[float]:
    """A row of n scores 1.0, 0.95, ... where positive positives[i] sits at 1-based rank ranks[i]."""
    row = [0.0] * n
    rest = iter(j for j in range(n) if j not in positives)
    at = dict(zip(ranks, positives))
    for r in range(1, n + 1):
        row[at[r] if r in at else next(rest)] = 1.0 - 0.05 * (r - 1)
    return row


def test_map_at_10_five_captions_as_dcase_and_clap():
    pos0, pos1 = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    q, items = exact_sims([_ranked_row(20, pos0, [1, 3, 6, 12, 15]), _ranked_row(20, pos1, [2, 4, 5, 7, 9])])
    pr = positive_ranks(q, items, [pos0, pos1])
    assert pr.of(0).tolist() == [1, 3, 6, 12, 15] and pr.of(1).tolist() == [2, 4, 5, 7, 9]
    m = retrieval_metrics_multi(q, items, [pos0, pos1])
    # clip 0: (1/1 + 2/3 + 3/6) / 5 = 13/30; clip 1: (1/2 + 2/4 + 3/5 + 4/7 + 5/9) / 5 = 859/1575
    assert m["mAP@10"] == pytest.approx(100 * (13 / 30 + 859 / 1575) / 2)
    assert m["R@1"] == 50.0 and m["MnR"] == 1.5  # best-ranked caption: 1 and 2


# 3 videos, captions c0 c1 (video 0), c2 c3 c4 (video 1), c5 (video 2); rows: video -> caption
VIDEO_TEXT = [
    [0.5, 0.4, 0.9, 0.8, 0.7, 0.6],
    [0.1, 0.2, 0.3, 0.95, 0.4, 0.5],
    [0.8, 0.7, 0.75, 0.1, 0.1, 0.6],
]
OWNERS = [0, 0, 1, 1, 1, 2]


def test_video_to_text_best_caption_as_clip4clip_multi_sentence():
    videos = np.asarray(VIDEO_TEXT, np.float32)
    texts = np.eye(6, dtype=np.float32)  # videos @ texts.T = VIDEO_TEXT
    res = evaluate_pair(texts, videos, OWNERS, x2t="best-caption")
    # each video's caption set scored by its best caption:
    # video 0: sets 0.5 / 0.9 / 0.6 -> rank 3; video 1: 0.2 / 0.95 / 0.5 -> 1; video 2: 0.8 / 0.75 / 0.6 -> 3
    v2t = res["x2t"]
    assert v2t["R@1"] == pytest.approx(100 / 3) and v2t["MnR"] == pytest.approx(7 / 3)
    assert v2t["MdR"] == 3.0 and v2t["queries"] == 3
    assert v2t["mAP@10"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 3) / 3)


def test_video_to_text_any_caption_ranks_among_all_captions():
    videos = np.asarray(VIDEO_TEXT, np.float32)
    texts = np.eye(6, dtype=np.float32)
    res = evaluate_pair(texts, videos, OWNERS)
    # video 0: own best 0.5 under 0.9 0.8 0.7 0.6 -> 5; video 1: 0.95 -> 1; video 2: 0.6 under 0.8 0.75 0.7 -> 4
    v2t = res["x2t"]
    assert v2t["MnR"] == pytest.approx(10 / 3) and v2t["MdR"] == 4.0  # floor(median(4, 0, 3)) + 1
    # text->video is the same either way: caption c queries the 3 videos (column c of the matrix)
    # c0 .5/.1/.8 -> 2; c1 .4/.2/.7 -> 2; c2 .9/.3/.75 -> 3; c3 .8/.95/.1 -> 1; c4 .7/.4/.1 -> 2; c5 .6/.5/.6 -> 2
    # (c5 ties video 0 with its own video 2: item order puts video 0 first)
    assert res["t2x"]["R@1"] == pytest.approx(100 / 6) and res["t2x"]["MnR"] == pytest.approx(12 / 6)
    assert evaluate_pair(texts, videos, OWNERS, x2t="best-caption")["t2x"] == res["t2x"]


def test_conventions_are_named_and_checked():
    text = describe_conventions("item-order", "midpoint", "best-caption")
    assert text["ties"].startswith("item-order:") and "open_clip" in text["ties"]
    assert text["median"].startswith("midpoint:") and "CLIP4Clip" in text["median"]
    assert text["x2t"].startswith("best-caption:") and "mAP@10" in text["map"]
    q, items = exact_sims(TIED)
    with pytest.raises(ValueError, match="ties='random'"):
        retrieval_metrics(q, items, TIED_POSITIVES, ties="random")
    with pytest.raises(ValueError, match="median='mean'"):
        retrieval_metrics(q, items, TIED_POSITIVES, median="mean")
    with pytest.raises(ValueError, match="x2t='all'"):
        evaluate_pair(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), [0, 1, 2, 3], x2t="all")
    with pytest.raises(ValueError, match="more than once"):
        retrieval_metrics_multi(q, items, [[0, 0], [1], [2]])
    assert "mAP@10" in format_table(evaluate_pair(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), [0, 1, 2]))
