"""Wall time and peak resident memory of one step.

The process's own peak (ru_maxrss) never goes down, so after the first step it would say nothing
about the next; a thread samples the resident set size (/proc/self/statm) every 20 ms while the
step runs and keeps the highest value above what the process held when the step began. Spikes
shorter than the period can be missed: the figure is a lower bound of the true peak.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PERIOD_S = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Measured:
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0  # the highest resident set size seen during the step
    start_rss_bytes: int = 0


@contextmanager
def measured() -> Iterator[Measured]:
    result = Measured(start_rss_bytes=rss_bytes())
    result.peak_rss_bytes = result.start_rss_bytes
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(PERIOD_S):
            result.peak_rss_bytes = max(result.peak_rss_bytes, rss_bytes())

    sampler = threading.Thread(target=sample, name="peak-rss", daemon=True)
    started = time.perf_counter()
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result.peak_rss_bytes = max(result.peak_rss_bytes, rss_bytes())
        result.wall_seconds = time.perf_counter() - started
