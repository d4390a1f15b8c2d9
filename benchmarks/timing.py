"""Timing shared by the benchmarks."""
from __future__ import annotations

import statistics
import time


def median_of(repeat: int, fn, warm: bool = False) -> tuple[float, object]:
    """``(median seconds, last value)`` of ``repeat`` calls of ``fn`` (after one warm-up
    call when ``warm``)."""
    if warm:
        fn()
    times, value = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), value
