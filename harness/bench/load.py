"""Load generation: a closed loop at fixed concurrency, or open-loop arrivals at a request rate.

Rate mode follows vLLM: gaps between arrivals are gamma-distributed with shape = burstiness and
mean 1/rate, so burstiness 1 is a Poisson process, < 1 burstier, > 1 more regular; an infinite
rate sends everything at once. Arrival times are absolute offsets from the level's start, so a
late wake-up does not push every later request back. A concurrency cap may go with a rate.

A level is bounded by a request count, a duration (no request starts after it; those in flight
finish and count), or both. Warm-up requests run first at the level's concurrency, are marked
`warmup=True`, and are left out of every metric.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import numpy as np

from harness.bench.datasets import BenchPrompt
from harness.bench.metrics import Timeline


class Outcome(Protocol):
    """A Timeline, or a result whose parsing waits until the level is over (see client.py)."""

    index: int
    warmup: bool

    def finish(self) -> Timeline: ...


class Engine(Protocol):
    async def stream(self, prompt: BenchPrompt, index: int, request_id: str) -> Outcome: ...


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int | None  # closed loop with this many in flight; with a rate, the cap (None: no cap)
    rate: float | None = None  # requests per second; math.inf sends all at once
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if self.rate is None and not self.concurrency:
            raise ValueError("a load level needs a concurrency or a rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be positive (inf for all at once)")
        if not self.burstiness > 0:
            raise ValueError("burstiness must be positive")


@dataclass(frozen=True)
class Bounds:
    num_requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("bound a level by a number of requests or a duration")


def arrival_offsets(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Seconds from the level's start at which requests 0..n-1 arrive (the first at 0)."""
    if math.isinf(rate):
        return np.zeros(n)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])


async def _closed_loop(engine: Engine, prompts: list[BenchPrompt], concurrency: int, bounds: Bounds,
                       prefix: str, on_done: Callable[[Outcome], None]) -> list[Outcome]:
    results: list[Outcome] = []
    counter = itertools.count()
    stop_at = perf_counter() + bounds.duration_s if bounds.duration_s is not None else math.inf

    async def worker() -> None:
        while True:
            i = next(counter)
            if (bounds.num_requests is not None and i >= bounds.num_requests) or perf_counter() >= stop_at:
                return
            timeline = await engine.stream(prompts[i % len(prompts)], i, f"{prefix}-{i}")
            results.append(timeline)
            on_done(timeline)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def _open_loop(engine: Engine, prompts: list[BenchPrompt], level: LoadLevel, bounds: Bounds, seed: int,
                     prefix: str, on_done: Callable[[Outcome], None]) -> list[Outcome]:
    assert level.rate is not None
    rng = np.random.default_rng(seed)
    cap = asyncio.Semaphore(level.concurrency) if level.concurrency else None
    results: list[Outcome] = []

    # With an infinite rate the cap is taken before a request is created (the arrival is when a
    # slot frees); with a finite rate requests arrive on schedule and wait for the cap, as vLLM.
    slot_first = cap is not None and math.isinf(level.rate)

    async def one(i: int) -> None:
        if cap is None or slot_first:
            try:
                timeline = await engine.stream(prompts[i % len(prompts)], i, f"{prefix}-{i}")
            finally:
                if slot_first:
                    cap.release()
        else:
            async with cap:  # the send time is taken inside, after the cap lets the request go
                timeline = await engine.stream(prompts[i % len(prompts)], i, f"{prefix}-{i}")
        results.append(timeline)
        on_done(timeline)

    batch = bounds.num_requests if bounds.num_requests is not None else 4096
    offsets = arrival_offsets(batch, level.rate, level.burstiness, rng)
    tasks: list[asyncio.Task] = []
    start = perf_counter()
    for i in itertools.count():
        if bounds.num_requests is not None and i >= bounds.num_requests:
            break
        if i >= len(offsets):  # duration-bounded: draw further arrivals as needed
            more = arrival_offsets(batch + 1, level.rate, level.burstiness, rng)[1:] + offsets[-1]
            offsets = np.concatenate([offsets, more])
        at = start + float(offsets[i])
        if bounds.duration_s is not None and max(at, perf_counter()) - start >= bounds.duration_s:
            break
        delay = at - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if slot_first:
            assert cap is not None
            await cap.acquire()
            if bounds.duration_s is not None and perf_counter() - start >= bounds.duration_s:
                cap.release()
                break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return results


async def run_level(engine: Engine, prompts: list[BenchPrompt], level: LoadLevel, bounds: Bounds, *,
                    warmup_prompts: list[BenchPrompt] = (), seed: int = 0, prefix: str = "req",
                    on_done: Callable[[Outcome], None] = lambda t: None) -> list[Timeline]:
    """Warm-up requests, then the measured ones; every timeline comes back (warm-up marked).
    Results are finished (parsed) only after the last request, off the measured path."""
    if not prompts:
        raise ValueError("no prompts to send")
    warm: list[Outcome] = []
    if warmup_prompts:
        width = min(len(warmup_prompts), level.concurrency or len(warmup_prompts))
        warm = await _closed_loop(engine, list(warmup_prompts), width, Bounds(num_requests=len(warmup_prompts)),
                                  f"{prefix}-warmup", lambda t: None)
        for t in warm:
            t.warmup = True
    if level.rate is None:
        assert level.concurrency is not None
        measured = await _closed_loop(engine, prompts, level.concurrency, bounds, prefix, on_done)
    else:
        measured = await _open_loop(engine, prompts, level, bounds, seed, prefix, on_done)
    ordered = sorted(warm, key=lambda t: t.index) + sorted(measured, key=lambda t: t.index)
    return [t.finish() for t in ordered]
