"""Shared helpers of the metric tests."""
from __future__ import annotations

import numpy as np


def exact_sims(rows) -> tuple[np.ndarray, np.ndarray]:
    """(queries, items) whose similarity matrix is exactly ``rows``."""
    s = np.asarray(rows, dtype=np.float32)
    return s, np.eye(s.shape[1], dtype=np.float32)
