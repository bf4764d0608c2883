"""The sequential gate's decisions: per gated metric, two anytime-valid tests, Holm across metrics, a fallback.

For a metric with per-document differences D = candidate - baseline in [-w, w] (w = 1 for 0/1
metrics; oriented so that positive is better) and tolerance delta (absolute points / 100), the
documents are read in a seeded random order, i.e. drawn without replacement from the N documents
the full gate would use. The estimand is the mean of D over those N documents. Mapped to
x = (D / w + 1) / 2 in [0, 1], the boundary mean(D) = -delta is m0 = (1 - delta / w) / 2, and
(harness.decisions.betting):

- pass test: H0 mean(D) <= -delta, betting that the mean is above m0; rejecting it shows the
  candidate is non-inferior: an early **pass**;
- fail test: H0 mean(D) >= -delta, betting below m0; rejecting it shows a regression beyond
  tolerance: an early **fail**.

alpha is split: alpha_seq = alpha * alpha_split for the sequential phase and alpha - alpha_seq for
the fixed-sample fallback (harness.decisions.fallback) used on a metric still undecided when its
documents (or max_docs) run out. Within each phase the Holm step-down correction runs over every
gated metric, on the anytime-valid p-values (1 / running max of the capital), separately for the
pass tests and the fail tests. So P(fail | no regression beyond tolerance) <= alpha_seq + alpha_fb
= alpha, and P(early pass | a regression beyond tolerance) <= alpha_seq. A metric decides at most
once; a decided metric stops taking documents (its p-values are frozen there, which a stopping time
allows); if both tests reject at the same look, fail wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.decisions import betting, fallback, paired

FIRST_CHUNK, LARGEST_CHUNK = 100, 1000


def next_chunk(done: int, chunk: int | None) -> int:
    """Documents to add to a task that has `done`: fixed, or 100 until 400 and then +25% a look (at most 1000).

    Growing chunks bound the number of looks (and the backend gets batches worth the overhead) while
    the overshoot past the point where the decision was reached stays within a quarter of the documents.
    """
    if chunk is not None:
        return chunk
    return max(FIRST_CHUNK, min(LARGEST_CHUNK, done // 4))


def look_points(n_max: int, chunk: int | None, min_docs: int = 0) -> list[int]:
    """The document counts after each chunk, up to n_max (the same schedule for simulations and live gates)."""
    points, done = [], 0
    while done < n_max:
        done = min(n_max, done + next_chunk(done, chunk))
        if done >= min_docs or done == n_max:
            points.append(done)
    return points


@dataclass
class MetricTrack:
    """One gated metric of one task: the differences seen so far and what they decided."""

    task: str
    metric: str
    width: float  # D lies in [-width, width]
    tolerance: float  # on the metric's scale (points / 100)
    available: int  # N, documents the full gate would use
    binary: bool
    diffs: np.ndarray = field(default_factory=lambda: np.empty(0))
    decision: str | None = None  # pass | fail (early) | pass-fallback | fail-fallback
    decided_at: int | None = None
    p_fallback: float | None = None
    p_fallback_adjusted: float | None = None
    _memo: dict = field(default_factory=dict, repr=False)  # values by the number of documents they were read at

    @property
    def n(self) -> int:
        return int(self.diffs.size)

    @property
    def boundary(self) -> float:
        return (1 - self.tolerance / self.width) / 2

    def x(self) -> np.ndarray:
        return (self.diffs / self.width + 1) / 2

    def e_values(self) -> tuple[float, float]:
        """(e_pass, e_fail): the running max of the two capitals, 1 before any document."""
        if self.n == 0:
            return 1.0, 1.0
        key = ("e", self.n)
        if key not in self._memo:  # a decided metric's values are read at every later look and in every output
            x = self.x()
            above = betting.capital(x, self.boundary, self.available, "above")
            below = betting.capital(x, self.boundary, self.available, "below")
            self._memo[key] = (max(1.0, float(np.max(above))), max(1.0, float(np.max(below))))
        return self._memo[key]

    def estimate(self) -> float:
        return float(self.diffs.mean()) if self.n else float("nan")

    def interval(self, alpha: float) -> tuple[float, float]:
        """The anytime-valid (1 - alpha) confidence sequence of mean(D), read now."""
        key = ("ci", self.n, alpha)
        if key not in self._memo:  # a bisection over the capital: computed once per number of documents
            low, high = betting.confidence_interval(self.x(), self.available, alpha)
            self._memo[key] = (self.width * (2 * low - 1), self.width * (2 * high - 1))
        return self._memo[key]

    def add(self, diffs: np.ndarray) -> None:
        if self.decision is None:
            self.diffs = np.concatenate([self.diffs, np.asarray(diffs, dtype=float)])


@dataclass(frozen=True)
class TracePoint:
    task: str
    metric: str
    look: int
    docs_used: int
    docs_available: int
    e_pass: float
    e_fail: float
    estimate: float
    ci_low: float
    ci_high: float
    decision: str | None


class SequentialTest:
    def __init__(self, tracks: list[MetricTrack], alpha: float, alpha_split: float, min_docs: int) -> None:
        if not 0 < alpha_split < 1:
            raise ValueError("alpha_split must be in (0, 1)")
        self.tracks, self.min_docs = tracks, min_docs
        self.alpha, self.alpha_seq = alpha, alpha * alpha_split
        self.alpha_fallback = alpha - self.alpha_seq
        self.looks = 0
        self.trace: list[TracePoint] = []

    def undecided(self) -> list[MetricTrack]:
        return [t for t in self.tracks if t.decision is None]

    def open_tasks(self) -> list[str]:
        return sorted({t.task for t in self.undecided()})

    def look(self) -> None:
        """Update every test with what was added since the last look, decide what can be, record the trace."""
        self.looks += 1
        evidence = [t.e_values() for t in self.tracks]
        p_pass = paired.holm([1.0 / e for e, _ in evidence])
        p_fail = paired.holm([1.0 / e for _, e in evidence])
        for track, pp, pf in zip(self.tracks, p_pass, p_fail):
            if track.decision is not None or track.n < min(self.min_docs, track.available):
                continue
            if pf <= self.alpha_seq:
                track.decision, track.decided_at = "fail", track.n
            elif pp <= self.alpha_seq:
                track.decision, track.decided_at = "pass", track.n
        for track, (e_pass, e_fail) in zip(self.tracks, evidence):
            low, high = track.interval(self.alpha_seq) if track.n else (-track.width, track.width)
            self.trace.append(TracePoint(track.task, track.metric, self.looks, track.n, track.available, e_pass, e_fail,
                                         track.estimate(), low, high, track.decision))

    def finish(self) -> None:
        """Fixed-sample fallback, Holm at alpha_fallback over the gated metrics, for those still undecided."""
        p = [fallback.regression_p_value(t.diffs, t.tolerance, t.binary) if t.decision is None else 1.0
             for t in self.tracks]
        adjusted = paired.holm(p)
        for track, raw, adj in zip(self.tracks, p, adjusted):
            if track.decision is None:
                track.p_fallback, track.p_fallback_adjusted = raw, float(adj)
                track.decision = "fail-fallback" if adj <= self.alpha_fallback else "pass-fallback"
                track.decided_at = track.n

    @property
    def passed(self) -> bool:
        return not any(t.decision in ("fail", "fail-fallback") for t in self.tracks)
