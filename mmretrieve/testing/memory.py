"""Peak memory of the current process, for tests and benchmarks."""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    On Linux, VmHWM from /proc/self/status: getrusage's ru_maxrss survives exec(), so a child
    started from a large parent (pytest after hundreds of tests) would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS
