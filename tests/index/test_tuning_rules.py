"""The rules behind structure choice, without building an index: TuningConfig checks, memory sizes,
memory estimates and the candidate structures for a count, a dimension and a budget."""
from __future__ import annotations

import math

import pytest

from mmretrieve.index.tuning import TuningConfig, candidate_structures, estimate_memory, parse_memory


@pytest.mark.parametrize("kwargs, message", [
    ({"target_recall": 0.0}, r"^target_recall=0\.0 must be in \(0, 1\]$"),
    ({"target_recall": 1.01}, r"^target_recall=1\.01 must be in \(0, 1\]$"),
    ({"max_memory": 0}, r"^max_memory=0 must be a positive number of bytes$"),
    ({"max_memory": True}, r"^max_memory=True must be a positive number of bytes$"),
    ({"rerank": -1}, r"^rerank=-1 must be >= 0$"),
    ({"flat_below": -1}, r"^flat_below must be >= 0, growth > 1 and queries >= 10$"),
    ({"growth": 1.0}, "^flat_below must be >= 0, growth > 1 and queries >= 10$"),
    ({"queries": 9}, "^flat_below must be >= 0, growth > 1 and queries >= 10$"),
])
def test_tuning_config_refuses_values_that_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TuningConfig(**kwargs)


def test_tuning_config_limits_are_inclusive_where_documented():
    c = TuningConfig(target_recall=1.0, rerank=0, flat_below=0, growth=1.01, queries=10, max_memory=1)
    assert TuningConfig.from_json(c.to_json()) == c


def test_tuning_config_from_json_defaults_and_ignores_unknown_keys():
    assert TuningConfig.from_json(None) == TuningConfig() == TuningConfig.from_json("")
    assert TuningConfig.from_json('{"rerank": 3, "added_later": 1}') == TuningConfig(rerank=3)


@pytest.mark.parametrize("text, expected", [
    (None, None), (123, 123), ("12", 12), ("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", int(1.5 * (1 << 30))),
    ("100kb", 100 << 10), (" 2t ", 2 << 40), ("64B", 64),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text, message", [
    ("lots", r"^memory size 'lots' is not a number of bytes such as 8G or 512M$"),
    ("G", "is not a number of bytes"),
    ("0", r"^memory size '0' must be positive$"),
    ("-1M", "must be positive"),
    ("nan", "must be positive"),
    ("inf", "must be positive"),
])
def test_parse_memory_refuses_what_is_not_a_size(text, message):
    with pytest.raises(ValueError, match=message):
        parse_memory(text)


def test_estimate_memory_per_code_kind():
    n, d, ids = 10, 8, 16
    assert estimate_memory("Flat", n, d) == n * (4 * d + ids)
    assert estimate_memory("IVF16,SQfp16", n, d) == n * (2 * d + ids) + 16 * d * 4
    assert estimate_memory("IVF16,SQ8", n, d) == n * (d + ids) + 16 * d * 4
    assert estimate_memory("IVF16,PQ4", n, d) == n * (4 + ids) + 16 * d * 4  # 8 bits per code by default
    assert estimate_memory("IVF16,PQ4x4fs", n, d) == n * (2 + ids) + 16 * d * 4
    assert estimate_memory("HNSW32,Flat", n, d) == n * (4 * d + int(32 * 2 * 4 * 1.1) + ids)
    assert estimate_memory("HNSW,SQ8", n, d) == n * (d + int(32 * 2 * 4 * 1.1) + ids)


def test_candidates_for_a_dimension_without_even_divisors_have_no_pq():
    assert candidate_structures(1000, 3, 1 << 40) == ["HNSW32,Flat", "IVF32,SQ8"]


def test_candidates_list_a_pq_code_size_once():
    # d = 4: both code sizes (4 and 2 dimensions per code) come to 2 sub-quantizers
    assert candidate_structures(1000, 4, 1 << 40) == ["HNSW32,Flat", "IVF32,PQ2x4fs", "IVF32,SQ8"]
    assert candidate_structures(1000, 64, 1 << 40) == ["HNSW32,Flat", "IVF32,PQ16x4fs", "IVF32,PQ32x4fs",
                                                       "IVF32,SQ8"]


def test_no_hnsw_beyond_two_million_and_the_budget_filters():
    big = candidate_structures(3_000_000, 64, 1 << 40)
    assert big == ["IVF2048,PQ16x4fs", "IVF2048,PQ32x4fs", "IVF2048,SQ8"]
    n, d = 100_000, 64
    tight = estimate_memory(f"IVF{2 ** round(math.log2(math.sqrt(n)))},PQ16x4fs", n, d)
    assert candidate_structures(n, d, tight) == ["IVF256,PQ16x4fs"]
    # no budget: 30 % of the raw vectors (1.2 bytes per dimension), never below 1 MiB
    assert candidate_structures(n, d, None) == [s for s in candidate_structures(n, d, 1 << 40)
                                                if estimate_memory(s, n, d) <= int(1.2 * n * d)]
