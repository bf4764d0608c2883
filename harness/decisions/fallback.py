"""Fixed-sample one-sided tests of "no regression beyond tolerance", for when a sequential gate runs out of documents.

H0: E[D] >= -delta, D = candidate - baseline per document (in the metric's direction), delta the
tolerance on the metric's own scale. A small p-value shows a regression beyond tolerance. Unlike the
fixed gate's rule ("drop > tolerance and McNemar significant against no difference"), these test the
tolerance itself, so their error rate at the boundary mean(D) = -delta is the nominal one.

- 0/1 metrics, delta > 0: Tango's score test for the difference of paired proportions (Tango 1998,
  Statistics in Medicine 17:891-908), the standard non-inferiority test for paired binary data: the
  variance of (c - b)/n is taken at the maximum-likelihood cell probabilities restricted to the null
  boundary. At delta = 0 it is McNemar's test; there the exact one-sided binomial test on the
  discordant pairs is used instead.
- other metrics: the one-sided paired t-test of mean(D) against -delta (scipy).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def tango_restricted_regressed(n: int, regressed: int, improved: int, delta0: float) -> float:
    """Restricted MLE of P(baseline right, candidate wrong) under P(improved) - P(regressed) = delta0.

    Root of 2n q^2 - B q - C = 0 (the derivative of the multinomial log-likelihood along the boundary),
    B = improved (1 - delta0) + regressed (1 - 3 delta0) - 2 ties delta0, C = regressed delta0 (1 - delta0).
    """
    ties = n - regressed - improved
    b_coef = improved * (1 - delta0) + regressed * (1 - 3 * delta0) - 2 * ties * delta0
    c_coef = regressed * delta0 * (1 - delta0)
    return (b_coef + math.sqrt(max(0.0, b_coef * b_coef + 8 * n * c_coef))) / (4 * n)


def tango_p_value(regressed: int, improved: int, n: int, tolerance: float) -> float:
    """One-sided p of H0: p_candidate - p_baseline >= -tolerance (Tango's score statistic, normal reference)."""
    delta0 = -tolerance
    q = tango_restricted_regressed(n, regressed, improved, delta0)
    variance = n * (2 * q + delta0 - delta0 * delta0)
    numerator = improved - regressed - n * delta0
    if variance <= 0:
        return 1.0 if numerator >= 0 else 0.0
    return float(sps.norm.cdf(numerator / math.sqrt(variance)))


def regression_p_value(diffs: np.ndarray, tolerance: float, binary: bool) -> float:
    """One-sided p-value of H0: mean(D) >= -tolerance on the documents seen (small = a regression shown)."""
    d = np.asarray(diffs, dtype=float)
    n = int(d.size)
    if n == 0:
        return 1.0
    if binary:
        regressed, improved = int(np.sum(d < 0)), int(np.sum(d > 0))
        if tolerance == 0:
            discordant = regressed + improved
            if discordant == 0:
                return 1.0
            return float(sps.binomtest(improved, discordant, 0.5, alternative="less").pvalue)
        return tango_p_value(regressed, improved, n, tolerance)
    if n < 2 or float(np.std(d)) == 0.0:
        return 0.0 if float(d.mean()) < -tolerance else 1.0
    return float(sps.ttest_1samp(d, -tolerance, alternative="less").pvalue)
