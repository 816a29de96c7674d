import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmretrieve.media.windows import fixed_windows, uniform_times


def test_long_duration_cut_into_windows_with_exact_end():
    assert fixed_windows(25.0, 10.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]


def test_exact_multiple_has_no_empty_tail():
    assert fixed_windows(30.0, 10.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    # float fuzz just above a multiple must not create a sliver window
    assert fixed_windows(0.3 / 0.1 * 10.0, 10.0)[-1][1] == pytest.approx(30.0)
    assert len(fixed_windows(30.0000000001, 10.0)) == 3


def test_short_tail_is_merged_into_previous_window():
    assert fixed_windows(20.5, 10.0) == [(0.0, 10.0), (10.0, 20.5)]
    assert fixed_windows(20.5, 10.0, min_tail=0.5) == [(0.0, 10.0), (10.0, 20.0), (20.0, 20.5)]
    assert fixed_windows(20.5, 10.0, min_tail=0.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 20.5)]


def test_single_window_cases():
    assert fixed_windows(7.0, None) == [(0.0, 7.0)]
    assert fixed_windows(7.0, 10.0) == [(0.0, 7.0)]
    assert fixed_windows(10.0, 10.0) == [(0.0, 10.0)]
    assert fixed_windows(10.4, 10.0) == [(0.0, 10.4)]  # tail below min_tail merges into the only window


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_duration_names_argument(duration):
    with pytest.raises(ValueError, match="duration"):
        fixed_windows(duration, 10.0)


@pytest.mark.parametrize("window", [0.0, -5.0, float("nan")])
def test_bad_window_names_argument(window):
    with pytest.raises(ValueError, match="window"):
        fixed_windows(10.0, window)


def test_bad_min_tail():
    with pytest.raises(ValueError, match="min_tail"):
        fixed_windows(10.0, 3.0, min_tail=-1)


@settings(max_examples=100, deadline=None)
@given(
    duration=st.floats(0.01, 500.0),
    window=st.floats(0.1, 100.0),
    min_tail=st.floats(0.0, 5.0),
)
def test_windows_tile_the_duration(duration, window, min_tail):
    wins = fixed_windows(duration, window, min_tail=min_tail)
    assert wins[0][0] == 0.0 and wins[-1][1] == duration
    for (s0, e0), (s1, _) in zip(wins, wins[1:]):
        assert e0 == s1
    for s, e in wins[:-1]:
        assert e - s == pytest.approx(window)
    s, e = wins[-1]
    if len(wins) > 1:
        assert e - s >= min(min_tail, window) - 1e-6
        assert e - s < window + min_tail + 1e-6


def test_uniform_times_are_slice_centres():
    assert uniform_times(0.0, 10.0, 5) == pytest.approx([1.0, 3.0, 5.0, 7.0, 9.0])
    assert uniform_times(10.0, 20.0, 1) == [15.0]
    assert uniform_times(2.0, 2.0, 3) == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_uniform_times_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must"):
        uniform_times(0.0, 1.0, n)


def test_uniform_times_rejects_reversed_range():
    with pytest.raises(ValueError):
        uniform_times(3.0, 1.0, 2)
    with pytest.raises(ValueError):
        uniform_times(0.0, math.nan, 2)
