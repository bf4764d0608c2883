"""Simulated sequential gates: the error rates and savings of harness.decisions.sequential, many gates at once.

One simulated gate is one gated 0/1 metric: per-document differences D in {-1, 0, 1} in a random
order, with a given mean and discordance (the share of documents where the two models disagree).
The same capital processes, look schedule, Holm-free single-metric rule and fallback test as the live
gate are applied, vectorised over the simulated gates (tests/unit/test_sequential_validity.py and
benchmarks/sequential_gate_savings.py use this).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.decisions import betting, fallback
from harness.decisions.sequential import look_points

BATCH = 100  # simulated gates per array: bounds memory at 100 x N floats per intermediate


def populations(rng: np.random.Generator, sims: int, n: int, mean: float, discordance: float, exact: bool) -> np.ndarray:
    """(sims, n) differences in random order. exact: every row is one finite population with exactly this
    mean and discordance, shuffled (the estimand of the gate); else i.i.d. draws with these expectations."""
    p_up, p_down = (discordance + mean) / 2, (discordance - mean) / 2
    if min(p_up, p_down) < 0 or discordance > 1:
        raise ValueError("mean and discordance do not make a distribution")
    if not exact:
        return rng.choice([1.0, -1.0, 0.0], size=(sims, n), p=[p_up, p_down, 1 - p_up - p_down])
    ups, downs = round(p_up * n), round(p_down * n)
    base = np.concatenate([np.ones(ups), -np.ones(downs), np.zeros(n - ups - downs)])
    return rng.permuted(np.tile(base, (sims, 1)), axis=1)


@dataclass(frozen=True)
class Outcomes:
    decision: np.ndarray  # per gate: pass | fail | pass-fallback | fail-fallback
    docs_used: np.ndarray
    available: int

    def rate(self, *decisions: str) -> float:
        return float(np.mean(np.isin(self.decision, decisions)))

    def median_share(self) -> float:
        return float(np.median(self.docs_used)) / self.available


def _batch(diffs: np.ndarray, tolerance: float, alpha_seq: float, alpha_fb: float, chunk: int | None,
           n_max: int, min_docs: int) -> tuple[np.ndarray, np.ndarray]:
    n_population = diffs.shape[1]
    x = (diffs[:, :n_max] + 1) / 2
    boundary = (1 - tolerance) / 2
    e_pass = np.maximum.accumulate(betting.capital(x, boundary, n_population, "above"), axis=1)
    e_fail = np.maximum.accumulate(betting.capital(x, boundary, n_population, "below"), axis=1)
    points = np.array(look_points(n_max, chunk, min_docs))
    fail_hit = e_fail[:, points - 1] >= 1 / alpha_seq
    pass_hit = e_pass[:, points - 1] >= 1 / alpha_seq
    never = len(points)
    first_fail = np.where(fail_hit.any(axis=1), fail_hit.argmax(axis=1), never)
    first_pass = np.where(pass_hit.any(axis=1), pass_hit.argmax(axis=1), never)
    decision = np.full(diffs.shape[0], "", dtype=object)
    used = np.full(diffs.shape[0], n_max)
    failed = (first_fail < never) & (first_fail <= first_pass)
    passed = (first_pass < never) & ~failed
    decision[failed], used[failed] = "fail", points[first_fail[failed]]
    decision[passed], used[passed] = "pass", points[first_pass[passed]]
    for i in np.flatnonzero(~failed & ~passed):
        p = fallback.regression_p_value(diffs[i, :n_max], tolerance, binary=True)
        decision[i] = "fail-fallback" if p <= alpha_fb else "pass-fallback"
    return decision, used


def simulate(diffs: np.ndarray, tolerance: float, alpha: float = 0.05, alpha_split: float = 0.5,
             chunk: int | None = None, max_docs: int | None = None, min_docs: int = 0) -> Outcomes:
    """Run one sequential gate per row of `diffs` (each row: the population in its drawn order)."""
    n_max = diffs.shape[1] if max_docs is None else min(max_docs, diffs.shape[1])
    alpha_seq = alpha * alpha_split
    decisions, used = [], []
    for start in range(0, diffs.shape[0], BATCH):
        d, u = _batch(diffs[start:start + BATCH], tolerance, alpha_seq, alpha - alpha_seq, chunk, n_max, min_docs)
        decisions.append(d)
        used.append(u)
    return Outcomes(np.concatenate(decisions), np.concatenate(used), diffs.shape[1])
