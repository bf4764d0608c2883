"""The sequential gate's fixed-sample fallback: Tango's score test and the paired t-test of mean(D) >= -tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from harness.decisions import fallback


@pytest.mark.parametrize("n,regressed,improved,delta0", [(500, 40, 25, -0.02), (200, 3, 9, -0.05), (1000, 0, 0, -0.01),
                                                          (300, 30, 30, 0.0), (80, 12, 2, -0.1)])
def test_restricted_mle_maximises_the_likelihood_on_the_boundary(n, regressed, improved, delta0):
    ties = n - regressed - improved

    def nll(q: float) -> float:
        cells = (q, q + delta0, 1 - 2 * q - delta0)
        return -sum(k * math.log(c) for k, c in zip((regressed, improved, ties), cells) if k)

    lo, hi = max(0.0, -delta0) + 1e-12, (1 - delta0) / 2 - 1e-12
    numeric = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
    assert fallback.tango_restricted_regressed(n, regressed, improved, delta0) == pytest.approx(numeric, abs=1e-6)


def test_tango_at_zero_tolerance_is_mcnemar():
    b, c, n = 37, 21, 400
    z = (c - b) / math.sqrt(b + c)
    assert fallback.tango_p_value(b, c, n, 0.0) == pytest.approx(stats.norm.cdf(z), rel=1e-12)


def test_binary_paths():
    d = np.array([-1.0] * 30 + [1.0] * 10 + [0.0] * 160)
    exact = fallback.regression_p_value(d, 0.0, binary=True)
    assert exact == pytest.approx(stats.binomtest(10, 40, 0.5, alternative="less").pvalue)
    assert fallback.regression_p_value(d, 0.02, binary=True) > exact  # a tolerance makes the same drop less damning
    assert fallback.regression_p_value(-d, 0.0, binary=True) > 0.99  # an improvement shows no regression
    assert fallback.regression_p_value(np.zeros(50), 0.0, binary=True) == 1.0


def test_continuous_path_is_the_one_sided_t_test():
    rng = np.random.default_rng(0)
    d = rng.normal(-0.03, 0.2, size=300).clip(-1, 1)
    p = fallback.regression_p_value(d, 0.01, binary=False)
    assert p == pytest.approx(stats.ttest_1samp(d, -0.01, alternative="less").pvalue)
    assert fallback.regression_p_value(np.full(10, -0.5), 0.01, binary=False) == 0.0  # no spread, clearly below


def test_tango_holds_alpha_at_the_boundary():
    rng = np.random.default_rng(1)
    n, sims, delta = 800, 4000, 0.03
    p_up, p_down = (0.2 - delta) / 2, (0.2 + delta) / 2
    counts = rng.multinomial(n, [p_down, p_up, 1 - p_up - p_down], size=sims)
    p = np.array([fallback.tango_p_value(int(b), int(c), n, delta) for b, c, _ in counts])
    assert np.mean(p <= 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
    assert np.mean(p <= 0.05) > 0.03  # not vacuous: close to the nominal level


def test_the_fixed_gates_rule_is_not_a_valid_test_at_the_boundary():
    """Why the fallback is not the fixed gate's rule: 'drop > tolerance and McNemar significant against no
    difference' fails about half the gates whose true drop is exactly the tolerance, once n is large."""
    rng = np.random.default_rng(2)
    n, sims, delta = 5000, 400, 0.02
    p_up, p_down = (0.2 - delta) / 2, (0.2 + delta) / 2
    counts = rng.multinomial(n, [p_down, p_up, 1 - p_up - p_down], size=sims)
    old = [(b - c) / n > delta and stats.binomtest(int(c), int(b + c), 0.5).pvalue < 0.05 for b, c, _ in counts]
    new = [fallback.tango_p_value(int(b), int(c), n, delta) <= 0.05 for b, c, _ in counts]
    assert np.mean(old) > 0.3 and np.mean(new) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
