"""Anytime-valid one-sided tests of a finite population's mean by betting, sampled without replacement.

The values x_1..x_n in [0, 1] are drawn without replacement, in a uniformly random order, from a
finite population of N values with mean mu (Waudby-Smith and Ramdas, "Estimating means of bounded
random variables by betting", JRSS-B 2024, section 6). Under mu = m the conditional mean of x_t
given the past is

    mu_t(m) = (N m - S_{t-1}) / (N - t + 1),      S_{t-1} = x_1 + ... + x_{t-1},

and the capital process K_t = prod_i (1 + lambda_i (x_i - mu_i(m))) with predictable bets is a
test martingale. For the one-sided null "mu <= m" the bets are kept >= 0 ("above": evidence that
the mean is above m), and the process is a supermartingale for every mu <= m, because mu_t(mu) <=
mu_t(m); for "mu >= m" the bets are <= 0 ("below"). Ville's inequality makes 1 / max_s K_s an
anytime-valid p-value: it may be read after every document, and the run stopped whenever.

The bet is aGRAPA, "approximate GRAPA" (the paper's section 5.2; confseq's `lambda_aKelly`):
lambda_t = (muhat_{t-1} - mu_t) / (sigmahat^2_{t-1} + (muhat_{t-1} - mu_t)^2), the running
estimate of the Kelly-optimal bet against the alternative the data show, with the running mean and
variance regularised by one fake observation at mean 1/2, variance 1/4, and the mean's estimate
carried into the without-replacement frame. It is chosen over the hedged predictable-plug-in bet
because a gate is a test, not an interval at one planned size: the plug-in bet shrinks like
1/sqrt(t log t) whatever the effect, while aGRAPA grows its stake when the effect is large, which
is what makes a clear pass or a clear regression stop after a few hundred documents. Bets are
truncated at 1/2 of the largest stake that keeps the capital non-negative (confseq's
trunc_scale=1/2), so one unlucky document can lose at most half of the capital.

Ties at tolerance 0 (both right or both wrong: x = 1/2 = m): with replacement (N = None) a tie
multiplies the capital by exactly 1, so only discordant pairs move it, as in McNemar's test (the
tie still shrinks the variance estimate and so enlarges later stakes). Without replacement a tie is
evidence: it fixes one member of the finite population, and mu_t moves away from 1/2 whenever the
discordant pairs so far are unbalanced. tests/unit/test_betting.py checks both statements, and
checks these processes against confseq's `betting_mart` to 1e-9.

Every function works on the last axis, so a batch of simulated gates runs as one array.
"""

from __future__ import annotations

import numpy as np

TRUNCATION = 0.5  # fraction of the largest bet that keeps the capital >= 0 (confseq's trunc_scale)
PRIOR_MEAN, PRIOR_VARIANCE, FAKE_OBS = 0.5, 0.25, 1.0


def _shift(values: np.ndarray, first: float) -> np.ndarray:
    """values[..., t-1] at position t (the value known before observation t); `first` at t = 1."""
    out = np.empty_like(values)
    out[..., 0] = first
    out[..., 1:] = values[..., :-1]
    return out


def null_means(x: np.ndarray, m: float | np.ndarray, n_population: int | None) -> np.ndarray:
    """mu_t(m): the mean of x_t given the past under mu = m (m itself when sampling with replacement)."""
    x = np.asarray(x, dtype=float)
    m_arr = np.asarray(m, dtype=float)
    if n_population is None:
        return np.broadcast_to(m_arr[..., None] if m_arr.ndim else m_arr, x.shape).astype(float)
    t = np.arange(1, x.shape[-1] + 1)
    before = _shift(np.cumsum(x, axis=-1), 0.0)
    m_col = m_arr[..., None] if m_arr.ndim else m_arr
    with np.errstate(divide="ignore", invalid="ignore"):
        return (n_population * m_col - before) / (n_population - t + 1)


def agrapa_bets(x: np.ndarray, mu_t: np.ndarray, n_population: int | None) -> np.ndarray:
    """confseq's lambda_aKelly before truncation: positive bets say "the mean is above mu_t"."""
    t = np.arange(1, x.shape[-1] + 1)
    mean_t = (FAKE_OBS * PRIOR_MEAN + np.cumsum(x, axis=-1)) / (t + FAKE_OBS)
    var_t = (FAKE_OBS * PRIOR_VARIANCE + np.cumsum((x - mean_t) ** 2, axis=-1)) / (t + FAKE_OBS)
    mean_prev, var_prev = _shift(mean_t, PRIOR_MEAN), _shift(var_t, PRIOR_VARIANCE)
    if n_population is not None:
        before = _shift(np.cumsum(x, axis=-1), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_prev = (n_population * mean_prev - before) / (n_population - t + 1)
    gap = mean_prev - mu_t
    return gap / (var_prev + gap**2)


def capital(x: np.ndarray, m: float | np.ndarray, n_population: int | None, side: str) -> np.ndarray:
    """K_t for H0 "mean <= m" (side="above") or H0 "mean >= m" (side="below"), t = 1..n.

    Where the observed values already rule the null out (the remaining N - t + 1 values would have
    to be below 0 or above 1), the capital is infinite from then on, as in confseq.
    """
    x = np.asarray(x, dtype=float)
    mu_t = null_means(x, m, n_population)
    raw = agrapa_bets(x, mu_t, n_population)
    with np.errstate(divide="ignore", invalid="ignore"):
        if side == "above":
            stake = np.minimum(np.maximum(raw, 0.0), TRUNCATION / mu_t)
            step = 1 + stake * (x - mu_t)
            impossible = mu_t < 0
        elif side == "below":
            stake = np.minimum(np.maximum(-raw, 0.0), TRUNCATION / (1 - mu_t))
            step = 1 - stake * (x - mu_t)
            impossible = mu_t > 1
        else:
            raise ValueError(f"side must be 'above' or 'below', not {side!r}")
    step = np.where(np.isinf(stake) & (x == mu_t), 1.0, step)  # 0 * inf: the null is not contradicted
    step = np.where(impossible, 1.0, np.maximum(step, 0.0))
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.cumprod(step, axis=-1)
    out = np.nan_to_num(out, nan=0.0, posinf=np.inf)
    ruled_out = np.maximum.accumulate(impossible, axis=-1)
    return np.where(ruled_out, np.inf, out)


def p_value(x: np.ndarray, m: float, n_population: int | None, side: str) -> np.ndarray:
    """Anytime-valid p-values after each observation: 1 / running max of the capital, capped at 1."""
    k = capital(x, m, n_population, side)
    with np.errstate(divide="ignore"):
        return np.minimum(1.0, 1.0 / np.maximum.accumulate(k, axis=-1))


def _crossing(x: np.ndarray, n_population: int | None, side: str, threshold: float, lo: float, hi: float) -> float:
    """The m in [lo, hi] where max_s K_s(m) falls to `threshold` (bisection; K moves monotonically in m)."""
    def rejects(m: float) -> bool:
        return bool(np.max(capital(x, m, n_population, side)) >= threshold)

    inner, outer = (hi, lo) if side == "above" else (lo, hi)  # "above" rejects small m; "below" large m
    if not rejects(outer):
        return outer
    if rejects(inner):
        return inner
    for _ in range(40):
        mid = (inner + outer) / 2
        if rejects(mid):
            outer = mid
        else:
            inner = mid
    return inner


def confidence_interval(x: np.ndarray, n_population: int | None, alpha: float) -> tuple[float, float]:
    """The (1 - alpha) confidence sequence for the population mean, read at the last observation.

    Each side holds alpha/2 (the running intersection over time is implied: the max over time of
    each capital is used), cut by the bounds the observed values force on a finite population.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return 0.0, 1.0
    centre = float(np.clip(x.mean(), 0.0, 1.0))
    threshold = 2.0 / alpha
    low = _crossing(x, n_population, "above", threshold, 0.0, centre)
    high = _crossing(x, n_population, "below", threshold, centre, 1.0)
    if n_population is not None:
        seen = float(x.sum())
        low = max(low, seen / n_population)
        high = min(high, (seen + n_population - x.size) / n_population)
    return low, high
