"""Window arithmetic shared by video and audio: fixed windows over a duration, uniform times in a window."""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["MAX_WINDOWS", "fixed_windows", "uniform_times"]

MAX_WINDOWS = 10_000_000  # a bound on the list fixed_windows builds (about 1 GB of tuples)

_EPS = 1e-9


def _check_positive(value: float, argument: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argument} must be a finite number of seconds > 0, got {value!r}")
    return value


def fixed_windows(duration: float, window: float | None, *, min_tail: float = 1.0) -> list[tuple[float, float]]:
    """Cut ``[0, duration)`` into windows ``[0, W), [W, 2W), ...``; the last one ends exactly at ``duration``.

    ``window=None`` (or ``duration <= window``) gives one window. A tail shorter than ``min_tail``
    seconds is merged into the previous window rather than becoming an entry of its own.
    """
    duration = _check_positive(duration, "duration")
    if window is None:
        return [(0.0, duration)]
    window = _check_positive(window, "window")
    min_tail = float(min_tail)
    if not math.isfinite(min_tail) or min_tail < 0:
        raise ValueError(f"min_tail must be a finite number of seconds >= 0, got {min_tail!r}")
    if duration <= window * (1 + _EPS):
        return [(0.0, duration)]
    # Number of window starts strictly before the end (tolerant of float fuzz such as 30.000000001 / 10).
    n = int(math.ceil(duration / window - _EPS))
    if n > MAX_WINDOWS:
        raise ValueError(f"{duration:.6g} s in windows of {window:g} s would make {n:,} windows "
                         f"(more than {MAX_WINDOWS:,}); use a longer window")
    starts = [i * window for i in range(n)]
    tail = duration - starts[-1]
    if len(starts) > 1 and tail < min_tail - _EPS:
        starts.pop()
    ends = starts[1:] + [duration]
    return [(float(s), float(e)) for s, e in zip(starts, ends)]


def uniform_times(start: float, end: float, n: int, offsets: Sequence[float] | None = None) -> list[float]:
    """Centres of ``n`` equal slices of ``[start, end]`` (deterministic uniform sampling).

    ``offsets`` (training augmentation only): one fraction in [0, 1) per slice placing its time
    inside the slice instead of at the centre (0.5).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"need finite start <= end, got start={start!r}, end={end!r}")
    if offsets is None:
        offsets = [0.5] * n
    elif len(offsets) != n or not all(0.0 <= float(o) < 1.0 for o in offsets):
        raise ValueError(f"offsets: expected {n} fractions in [0, 1), got {list(offsets)!r}")
    step = (end - start) / n
    return [start + (i + float(o)) * step for i, o in enumerate(offsets)]
