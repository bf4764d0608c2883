"""Serving metrics as pure functions over request timelines; definitions in docs/bench.md.

Names follow vLLM's `benchmark_serving` (TTFT, TPOT, ITL, E2E latency, goodput). All times
are integer nanoseconds of one monotonic clock (time.perf_counter_ns, CLOCK_MONOTONIC on
Linux) so that a client and a server process on the same machine can be compared directly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)
SLO_KEYS = {"ttft": "ttft", "tpot": "tpot", "e2e": "e2e", "e2el": "e2e"}


@dataclass
class Timeline:
    """What one request did, as seen by the client (or by the in-process engine)."""

    index: int  # position in the level's request order
    send_ns: int
    end_ns: int
    token_ns: list[int] = field(default_factory=list)  # one entry per content token; a coalesced chunk repeats its time
    input_tokens: int | None = None
    output_tokens: int | None = None  # from usage when reported, else the tokenizer (see token_source)
    token_source: str = "chunks"  # usage | tokenizer | chunks | engine
    error: str | None = None
    warmup: bool = False
    request_id: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def finish(self) -> Timeline:
        """Engines may hand back a deferred result; a Timeline is already final."""
        return self

    @property
    def ttft_ms(self) -> float | None:
        return (self.token_ns[0] - self.send_ns) / 1e6 if self.token_ns else None

    @property
    def e2e_ms(self) -> float:
        return (self.end_ns - self.send_ns) / 1e6

    @property
    def n_output(self) -> int:
        return self.output_tokens if self.output_tokens is not None else len(self.token_ns)

    @property
    def tpot_ms(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1): undefined for fewer than two tokens."""
        ttft = self.ttft_ms
        if ttft is None or self.n_output < 2:
            return None
        return (self.e2e_ms - ttft) / (self.n_output - 1)

    def itl_ms(self) -> list[float]:
        """Every gap between consecutive content tokens (zero inside a coalesced chunk)."""
        t = self.token_ns
        return [(t[i] - t[i - 1]) / 1e6 for i in range(1, len(t))]


@dataclass(frozen=True)
class Stats:
    mean: float | None
    std: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "p50": self.p50, "p90": self.p90, "p95": self.p95,
                "p99": self.p99, "n": self.n}


def stats(values: list[float]) -> Stats:
    """Mean, population std and linear-interpolated percentiles (numpy's default, as vLLM)."""
    if not values:
        return Stats(None, None, None, None, None, None, 0)
    a = np.asarray(values, dtype=np.float64)
    p = np.percentile(a, PERCENTILES)
    return Stats(float(a.mean()), float(a.std()), *(float(x) for x in p), n=int(a.size))


@dataclass(frozen=True)
class Slo:
    """Per-request service-level objectives in milliseconds; None means no constraint."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    def met_by(self, t: Timeline) -> bool:
        if not t.ok:
            return False
        if self.ttft is not None and (t.ttft_ms is None or t.ttft_ms > self.ttft):
            return False
        tpot = t.tpot_ms
        if self.tpot is not None and tpot is not None and tpot > self.tpot:
            return False  # a one-token answer has no TPOT and cannot miss it
        return self.e2e is None or t.e2e_ms <= self.e2e

    def as_dict(self) -> dict:
        return {k: v for k, v in (("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e)) if v is not None}


def parse_slo(text: str | None) -> Slo:
    """`ttft=500,tpot=50[,e2e=2000]` (milliseconds) -> Slo; raises ValueError with the reason."""
    if not text:
        return Slo()
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise ValueError(f"malformed SLO {part!r}: expected ttft=MS, tpot=MS or e2e=MS")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"SLO {key} must be a number of milliseconds, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"SLO {key} must be a positive number of milliseconds, got {value!r}")
        values[SLO_KEYS[key]] = number
    return Slo(**values)


@dataclass
class LevelSummary:
    """Everything reported for one load level (one concurrency or one request rate)."""

    concurrency: int | None
    rate: float | None
    burstiness: float
    requests: int
    completed: int
    failed: int
    duration_s: float
    input_tokens: int
    output_tokens: int
    ttft_ms: Stats
    tpot_ms: Stats
    itl_ms: Stats
    e2e_ms: Stats
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests_per_s: float
    goodput_requests_per_s: float | None
    slo_attainment: float | None
    token_source: str
    errors: dict[str, int] = field(default_factory=dict)
    cost_per_million_output_tokens: float | None = None
    peak_memory_mb: float | None = None

    @property
    def label(self) -> str:
        if self.rate is None:
            return f"concurrency {self.concurrency}"
        rate = "inf" if math.isinf(self.rate) else f"{self.rate:g}"
        cap = f", max concurrency {self.concurrency}" if self.concurrency else ""
        return f"rate {rate}/s{cap}"

    def as_json(self) -> dict:
        return {
            "concurrency": self.concurrency, "rate": None if self.rate is None or math.isinf(self.rate) else self.rate,
            "rate_is_infinite": bool(self.rate is not None and math.isinf(self.rate)), "burstiness": self.burstiness,
            "requests": self.requests, "completed": self.completed, "failed": self.failed,
            "duration_s": self.duration_s, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "ttft_ms": self.ttft_ms.as_dict(), "tpot_ms": self.tpot_ms.as_dict(), "itl_ms": self.itl_ms.as_dict(),
            "e2e_ms": self.e2e_ms.as_dict(), "output_tokens_per_s": self.output_tokens_per_s,
            "total_tokens_per_s": self.total_tokens_per_s, "requests_per_s": self.requests_per_s,
            "goodput_requests_per_s": self.goodput_requests_per_s, "slo_attainment": self.slo_attainment,
            "token_source": self.token_source, "errors": self.errors,
            "cost_per_million_output_tokens": self.cost_per_million_output_tokens,
            "peak_memory_mb": self.peak_memory_mb,
        }


def token_source(timelines: list[Timeline]) -> str:
    """The one source of the token counts, or e.g. 'mixed(usage=3,tokenizer=1)'."""
    counts = Counter(t.token_source for t in timelines if t.ok)
    if len(counts) <= 1:
        return next(iter(counts), "none")
    return "mixed(" + ",".join(f"{k}={v}" for k, v in sorted(counts.items())) + ")"


def error_counts(timelines: list[Timeline], top: int = 5) -> dict[str, int]:
    counts = Counter(t.error for t in timelines if t.error is not None)
    return dict(counts.most_common(top))


def cost_per_million(gpu_cost_per_hour: float | None, output_tokens_per_s: float) -> float | None:
    if gpu_cost_per_hour is None or output_tokens_per_s <= 0:
        return None
    return gpu_cost_per_hour / (output_tokens_per_s * 3600.0) * 1e6


def summarize(timelines: list[Timeline], *, concurrency: int | None, rate: float | None, burstiness: float = 1.0,
              slo: Slo | None = None, gpu_cost_per_hour: float | None = None,
              peak_memory_mb: float | None = None) -> LevelSummary:
    """Metrics of one level. Warm-up requests are left out; failed requests count as failed,
    not as latency samples; the duration runs from the first send to the last end of any
    counted request (failed ones included), as vLLM's benchmark duration."""
    counted = [t for t in timelines if not t.warmup]
    done = [t for t in counted if t.ok]
    duration_s = (max(t.end_ns for t in counted) - min(t.send_ns for t in counted)) / 1e9 if counted else 0.0
    out_tokens = sum(t.n_output for t in done)
    in_tokens = sum(t.input_tokens or 0 for t in done)
    itl: list[float] = []
    for t in done:
        itl.extend(t.itl_ms())

    def per_s(x: float) -> float:
        return x / duration_s if duration_s > 0 else 0.0

    constrained = slo is not None and bool(slo.as_dict())
    good = sum(1 for t in done if slo.met_by(t)) if constrained and slo is not None else None
    out_rate = per_s(out_tokens)
    return LevelSummary(
        concurrency=concurrency, rate=rate, burstiness=burstiness, requests=len(counted), completed=len(done),
        failed=len(counted) - len(done), duration_s=duration_s, input_tokens=in_tokens, output_tokens=out_tokens,
        ttft_ms=stats([x for t in done if (x := t.ttft_ms) is not None]),
        tpot_ms=stats([x for t in done if (x := t.tpot_ms) is not None]),
        itl_ms=stats(itl), e2e_ms=stats([t.e2e_ms for t in done]),
        output_tokens_per_s=out_rate, total_tokens_per_s=per_s(out_tokens + in_tokens), requests_per_s=per_s(len(done)),
        goodput_requests_per_s=per_s(good) if good is not None else None,
        slo_attainment=(good / len(counted) if counted else None) if good is not None else None,
        token_source=token_source(done), errors=error_counts(counted),
        cost_per_million_output_tokens=cost_per_million(gpu_cost_per_hour, out_rate), peak_memory_mb=peak_memory_mb,
    )
