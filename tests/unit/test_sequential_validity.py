"""The sequential gate's error rates and savings by simulation (seeded; harness.decisions.simulate runs the
live gate's capital processes, look schedule and fallback on many simulated gates at once)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.decisions.sequential import look_points, next_chunk
from harness.decisions.simulate import populations, simulate

ALPHA, SIMS = 0.05, 2000
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMS)  # three Monte Carlo standard errors


def _gates(seed: int, n: int, mean: float, discordance: float, tolerance: float, exact: bool = True, **kwargs):
    return simulate(populations(np.random.default_rng(seed), SIMS, n, mean, discordance, exact), tolerance,
                    alpha=ALPHA, **kwargs)


@pytest.mark.parametrize("max_docs", [None, 1000])
def test_at_the_boundary_neither_error_exceeds_alpha(max_docs):
    """True mean difference exactly -tolerance: 'fail' (early or fallback) and early 'pass' are both errors."""
    out = _gates(1, 2000, -0.02, 0.2, 0.02, max_docs=max_docs)
    assert out.rate("fail", "fail-fallback") <= ALPHA + SLACK
    assert out.rate("pass") <= ALPHA + SLACK
    assert out.rate("pass-fallback") > 0.5  # at the boundary most gates cannot decide: they fall back


def test_fallback_alone_holds_its_share_on_iid_documents():
    """Documents drawn i.i.d. with mean -tolerance and a budget far below N: the fallback is a valid test."""
    out = _gates(2, 14042, -0.02, 0.2, 0.02, exact=False, max_docs=600)
    assert out.rate("fail", "fail-fallback") <= ALPHA + SLACK
    assert out.rate("fail-fallback") > 0  # the fallback does reject sometimes: the bound is not met vacuously


def test_no_difference_at_tolerance_zero_rarely_fails():
    out = _gates(3, 2000, 0.0, 0.2, 0.0)
    assert out.rate("fail", "fail-fallback") <= ALPHA + SLACK


def test_a_clear_regression_rarely_passes_early():
    out = _gates(4, 2000, -0.08, 0.2, 0.02)
    assert out.rate("pass") <= ALPHA + SLACK
    assert out.rate("fail") > 0.95 and out.median_share() < 0.5  # and it is caught early


def _mmlu(seed: int, mean: float, tolerance: float):
    return simulate(populations(np.random.default_rng(seed), 200, 14042, mean, 0.10, True), tolerance, alpha=ALPHA,
                    min_docs=100)


def test_savings_on_an_mmlu_sized_task():
    """N = 14,042, discordance 10% (the issue's table; benchmarks/sequential_gate_savings.py prints it in full)."""
    fine = _mmlu(5, 0.0, 0.02)  # no difference, tolerance 2 points
    assert fine.rate("pass") > 0.95 and fine.median_share() <= 0.20
    broken = _mmlu(6, -0.05, 0.01)  # 5 points worse, tolerance 1 point
    assert broken.rate("fail") > 0.95 and broken.median_share() <= 0.05
    boundary = _mmlu(7, -0.01, 0.01)  # at the boundary: (nearly) every document, then the fallback
    assert boundary.median_share() == 1.0 and boundary.rate("pass-fallback", "fail-fallback") > 0.8


def test_look_schedule():
    assert [next_chunk(d, None) for d in (0, 300, 400, 1000, 8000)] == [100, 100, 100, 250, 1000]
    assert next_chunk(5000, 64) == 64
    points = look_points(2000, None, min_docs=250)
    assert points[0] == 300 and points[-1] == 2000 and points == sorted(set(points))
    assert look_points(250, 100) == [100, 200, 250]
