"""Paired statistics against reference implementations (scipy, statsmodels)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep

from harness.decisions import paired


def _pairs(both: int, only_b: int, only_a: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [0] * only_b + [1] * only_a + [0] * neither, dtype=float)
    b = np.array([1] * both + [1] * only_b + [0] * only_a + [0] * neither, dtype=float)
    return a, b


@pytest.mark.parametrize("table", [(30, 3, 12, 5), (50, 0, 0, 50), (10, 7, 1, 2), (400, 20, 41, 39), (0, 0, 5, 0)])
def test_mcnemar_matches_statsmodels_exact(table):
    both, only_b, only_a, neither = table
    a, b = _pairs(*table)
    result = paired.mcnemar_exact(a, b)
    reference = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
    assert result.p_value == pytest.approx(min(1.0, reference), rel=1e-12)
    assert (result.improved, result.regressed, result.n) == (only_b, only_a, sum(table))
    assert result.delta == pytest.approx(b.mean() - a.mean())


def test_newcombe_reduces_to_independent_newcombe_when_uncorrelated():
    # ad == bc makes phi = 0: the paired interval is then the independent Wilson-hybrid (Newcombe) one
    both, only_b, only_a, neither = 4, 2, 2, 1
    n = both + only_b + only_a + neither
    low, high = paired.newcombe_paired_ci(both, only_b, only_a, neither)
    ref = confint_proportions_2indep(both + only_b, n, both + only_a, n, method="newcomb", compare="diff")
    assert (low, high) == pytest.approx(tuple(ref), abs=1e-10)
    both, only_b, only_a, neither = 20, 10, 4, 2  # ad = 40 = bc
    n = both + only_b + only_a + neither
    ref = confint_proportions_2indep(both + only_b, n, both + only_a, n, method="newcomb", compare="diff")
    assert paired.newcombe_paired_ci(both, only_b, only_a, neither) == pytest.approx(tuple(ref), abs=1e-10)


def test_newcombe_close_to_wald_for_large_samples_and_sane_at_the_edges():
    both, only_b, only_a, neither = 4000, 300, 500, 5200
    n = both + only_b + only_a + neither
    delta = (only_b - only_a) / n
    se = np.sqrt((only_b + only_a) / n - delta**2) / np.sqrt(n)  # paired Wald
    low, high = paired.newcombe_paired_ci(both, only_b, only_a, neither)
    assert low == pytest.approx(delta - 1.959964 * se, abs=5e-4)
    assert high == pytest.approx(delta + 1.959964 * se, abs=5e-4)
    low, high = paired.newcombe_paired_ci(0, 0, 10, 0)  # every pair regressed: delta -1
    assert -1.0 <= low < -0.6 and low < high < 0
    low, high = paired.newcombe_paired_ci(25, 0, 0, 25)  # identical: interval around 0
    assert low < 0 < high and high - low < 0.2


def test_newcombe_coverage_is_near_nominal():
    rng = np.random.default_rng(7)
    probs = np.array([0.55, 0.08, 0.15, 0.22])  # both, only_b, only_a, neither: true delta -0.07
    covered = 0
    trials = 2000
    for table in rng.multinomial(60, probs, size=trials):
        low, high = paired.newcombe_paired_ci(*map(int, table))
        covered += low <= -0.07 <= high
    assert 0.93 <= covered / trials <= 0.975


def test_bootstrap_matches_scipy_paired_percentile():
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.2, 300)
    b = a + rng.normal(0.03, 0.1, 300)
    result = paired.paired_bootstrap(a, b, n_bootstrap=10_000, seed=1)
    ref = sps.bootstrap((b - a,), np.mean, n_resamples=10_000, method="percentile", random_state=2).confidence_interval
    width = ref.high - ref.low
    assert result.delta == pytest.approx(float(np.mean(b - a)))
    assert result.ci_low == pytest.approx(ref.low, abs=0.03 * width)
    assert result.ci_high == pytest.approx(ref.high, abs=0.03 * width)
    assert result.p_value < 1e-3  # a clear shift
    t_p = sps.ttest_rel(b, a).pvalue
    assert t_p < 1e-3
    assert result.improved + result.regressed == 300


def test_bootstrap_p_value_agrees_with_paired_t_test_roughly_and_is_seeded():
    rng = np.random.default_rng(11)
    a = rng.uniform(0, 1, 200)
    b = a + rng.normal(0.01, 0.1, 200)
    first = paired.paired_bootstrap(a, b, n_bootstrap=20_000, seed=5)
    again = paired.paired_bootstrap(a, b, n_bootstrap=20_000, seed=5)
    assert first == again
    assert first.p_value == pytest.approx(sps.ttest_rel(b, a).pvalue, abs=0.03)
    same = paired.paired_bootstrap(a, a, n_bootstrap=1000, seed=0)
    assert same.delta == 0 and same.p_value == 1.0 and same.improved == same.regressed == 0


def test_bootstrap_chunks_give_the_same_means(monkeypatch):
    diffs = np.random.default_rng(0).normal(size=1000)
    whole = paired.bootstrap_means(diffs, 500, seed=9)
    monkeypatch.setattr(paired, "_BOOTSTRAP_CELLS", 7 * 1000)
    chunked = paired.bootstrap_means(diffs, 500, seed=9)
    assert np.allclose(whole, chunked)


@pytest.mark.parametrize("pvals", [[0.01, 0.04, 0.03, 0.005], [0.5, 0.2, 0.9], [0.001], [0.02, 0.02, 0.5, 1.0, 0.0]])
def test_holm_matches_statsmodels(pvals):
    ours = paired.holm(pvals)
    reference = multipletests(pvals, method="holm")[1]
    assert np.allclose(ours, reference)


def test_holm_keeps_nan_out():
    out = paired.holm([0.01, float("nan"), 0.04])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
