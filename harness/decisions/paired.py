"""Paired statistics for two runs scored on the same documents.

- 0/1 metrics: exact McNemar test, i.e. a two-sided binomial test (scipy.stats.binomtest, p=1/2)
  on the discordant pairs; the 95% interval of the paired difference of proportions is
  Newcombe's hybrid score interval for paired data (Newcombe 1998, Statistics in Medicine
  17:2635-2650, "method 10": Wilson score intervals of both proportions combined with the
  phi correlation of the 2x2 table, with Newcombe's continuity correction of phi when positive).
  Unlike the Wald interval it stays inside [-1, 1] and keeps
  its coverage when few pairs are discordant.
- other metrics: a paired bootstrap of the mean difference (documents resampled with
  replacement, both runs together), vectorised with numpy and seeded; percentile interval;
  the p-value is the share of bootstrap means, shifted to the null of no difference, at least
  as far from zero as the observed mean.
- Holm-Bonferroni step-down adjustment across all tested metrics. scipy has no Holm (only
  Benjamini-Hochberg/Yekutieli); statsmodels' `multipletests` does, but importing it costs a
  second and four packages on every `compare`, so the few lines are here and tests check them
  against statsmodels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = float(sps.norm.ppf(0.975))
_BOOTSTRAP_CELLS = 4_000_000  # resample at most this many indices at once (memory bound)


@dataclass(frozen=True)
class PairedTest:
    delta: float  # mean(b) - mean(a)
    ci_low: float
    ci_high: float
    p_value: float
    improved: int  # pairs where b > a
    regressed: int  # pairs where b < a
    n: int


def is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.all((x == 0) | (x == 1))) for x in arrays)


def _wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired_ci(both: int, only_b: int, only_a: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p_b - p_a for paired 0/1 outcomes (Newcombe 1998, method 10).

    both: pairs with a=1 and b=1; only_b: a=0, b=1; only_a: a=1, b=0; neither: a=0, b=0.
    """
    n = both + only_b + only_a + neither
    if n == 0:
        return float("nan"), float("nan")
    succ_b, succ_a = both + only_b, both + only_a
    p_b, p_a = succ_b / n, succ_a / n
    l_b, u_b = _wilson(succ_b, n, z)
    l_a, u_a = _wilson(succ_a, n, z)
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    cross = both * neither - only_b * only_a
    if cross > 0:  # Newcombe's continuity correction: without it a table with no discordant pairs has zero width
        cross = max(cross - n / 2, 0.0)
    phi = 0.0 if margins == 0 else cross / math.sqrt(margins)
    delta = p_b - p_a
    lower = math.sqrt(max(0.0, (p_b - l_b) ** 2 - 2 * phi * (p_b - l_b) * (u_a - p_a) + (u_a - p_a) ** 2))
    upper = math.sqrt(max(0.0, (u_b - p_b) ** 2 - 2 * phi * (u_b - p_b) * (p_a - l_a) + (p_a - l_a) ** 2))
    return max(-1.0, delta - lower), min(1.0, delta + upper)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Exact McNemar test and Newcombe interval for paired 0/1 outcomes a (baseline) and b."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = int(a.size)
    only_b = int(np.sum((a == 0) & (b == 1)))
    only_a = int(np.sum((a == 1) & (b == 0)))
    both = int(np.sum((a == 1) & (b == 1)))
    neither = n - only_b - only_a - both
    discordant = only_b + only_a
    p = 1.0 if discordant == 0 else float(sps.binomtest(only_b, discordant, 0.5).pvalue)
    low, high = newcombe_paired_ci(both, only_b, only_a, neither)
    delta = (only_b - only_a) / n if n else float("nan")
    return PairedTest(delta, low, high, min(1.0, p), only_b, only_a, n)


def bootstrap_means(diffs: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """Means of `n_bootstrap` resamples (with replacement) of `diffs`, in chunks that bound memory."""
    rng = np.random.default_rng(seed)
    n = diffs.size
    out = np.empty(n_bootstrap)
    step = max(1, _BOOTSTRAP_CELLS // max(n, 1))
    for start in range(0, n_bootstrap, step):
        stop = min(n_bootstrap, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = diffs[idx].mean(axis=1)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 10_000, seed: int = 0) -> PairedTest:
    """Paired bootstrap of mean(b - a): percentile 95% interval and a two-sided p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diffs = b - a
    n = int(diffs.size)
    improved, regressed = int(np.sum(diffs > 0)), int(np.sum(diffs < 0))
    if n == 0:
        return PairedTest(float("nan"), float("nan"), float("nan"), 1.0, 0, 0, 0)
    observed = float(diffs.mean())
    if not np.any(diffs != diffs[0]):  # no spread: every resample gives the same mean
        return PairedTest(observed, observed, observed, 1.0 if observed == 0 else 0.0, improved, regressed, n)
    means = bootstrap_means(diffs, n_bootstrap, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    extreme = int(np.sum(np.abs(means - observed) >= abs(observed) - 1e-15))
    p = (1 + extreme) / (1 + n_bootstrap)
    return PairedTest(observed, float(low), float(high), min(1.0, p), improved, regressed, n)


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out
