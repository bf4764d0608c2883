"""The betting e-processes against confseq (Waudby-Smith's reference implementation), and their tie behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from harness.decisions import betting

np.float_ = np.float64  # type: ignore[attr-defined]  # confseq 0.0.11 still names the alias NumPy 2 removed

import confseq.betting as confseq_betting  # noqa: E402  (a dev dependency: make test builds it)
import confseq.betting_strategies as strategies  # noqa: E402


def _reference(x: np.ndarray, m: float, n_population: int | None, side: str) -> np.ndarray:
    """confseq's betting_mart with its aGRAPA bets (lambda_aKelly), kept one-sided as the gate's tests are."""
    def positive(x, m):
        return np.maximum(0.0, strategies.lambda_aKelly(x, m, N=n_population, trunc_scale=1))

    def negative(x, m):
        return np.maximum(0.0, -strategies.lambda_aKelly(x, m, N=n_population, trunc_scale=1))

    with np.errstate(divide="ignore", invalid="ignore"):
        if side == "above":
            return confseq_betting.betting_mart(x, m, N=n_population, theta=1, lambdas_fn_positive=positive,
                                                trunc_scale=betting.TRUNCATION)
        return confseq_betting.betting_mart(x, m, N=n_population, theta=0, lambdas_fn_negative=negative,
                                            trunc_scale=betting.TRUNCATION)


SEQUENCES = [
    # (values, probabilities, null mean, population size)
    ([0.0, 0.5, 1.0], [0.1, 0.75, 0.15], 0.5, 2000),     # paired 0/1 differences, tolerance 0
    ([0.0, 0.5, 1.0], [0.1, 0.75, 0.15], 0.495, 1000),   # tolerance 1 point
    ([0.0, 0.5, 1.0], [0.2, 0.7, 0.1], 0.49, 600),       # a regression
    ([0.0, 0.5, 1.0], [0.1, 0.75, 0.15], 0.5, None),     # with replacement
    (None, None, 0.4, 800),                              # continuous values in [0, 1]
]


@pytest.mark.parametrize("values,probs,m,n_population", SEQUENCES)
@pytest.mark.parametrize("side", ["above", "below"])
def test_capital_equals_confseq(values, probs, m, n_population, side):
    rng = np.random.default_rng(7)
    n = 500
    x = rng.choice(values, size=n, p=probs) if values is not None else rng.beta(2, 3, size=n)
    if side == "below":  # mirrored, so that this side has evidence to bet on too
        x, m = 1 - x, 1 - m
    ours = betting.capital(x, m, n_population, side)
    ref = _reference(x, m, n_population, side)
    # confseq marks the capital infinite wherever the point null m is impossible; for a one-sided null only
    # the side that contradicts it counts (a mean far below m is no evidence against "mean <= m")
    mu_t = betting.null_means(x, m, n_population)
    wrong_side = (mu_t > 1) if side == "above" else (mu_t < 0)
    keep = ~np.maximum.accumulate(wrong_side)
    assert keep.sum() > 100
    np.testing.assert_allclose(ours[keep], ref[keep], rtol=1e-9, atol=1e-12)
    finite = ours[keep][np.isfinite(ours[keep])]
    assert np.ptp(np.log(finite)) > 0.05  # the capital moved: the comparison is not between two constant 1s


def test_ruled_out_null_is_infinite_on_its_side_only():
    x = np.ones(20)  # the population of 20 has mean 1/2 only if the rest averages below 0 after 10 ones
    above = betting.capital(x, 0.5, 20, "above")
    below = betting.capital(x, 0.5, 20, "below")
    assert np.isinf(above[-1]) and np.all(np.isfinite(above[:10]))
    assert np.all(np.isfinite(below)) and below[-1] <= 1


def test_ties_carry_no_evidence_with_replacement():
    """tolerance 0: m = 1/2; a tie (x = 1/2) multiplies the capital by exactly 1, as in McNemar's test."""
    rng = np.random.default_rng(3)
    for side, probs in (("above", [0.05, 0.8, 0.15]), ("below", [0.15, 0.8, 0.05])):  # data that side bets on
        x = rng.choice([0.0, 0.5, 1.0], size=300, p=probs)
        k = betting.capital(x, 0.5, None, side)
        steps = k / np.concatenate([[1.0], k[:-1]])
        assert np.all(steps[x == 0.5] == 1.0)
        assert np.any(steps[x != 0.5] != 1.0)


def test_ties_are_evidence_without_replacement():
    """Without replacement a tie fixes one member of the population: after unbalanced discordant pairs it moves K."""
    x = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    k = betting.capital(x, 0.5, 10, "above")
    steps = k / np.concatenate([[1.0], k[:-1]])
    assert np.all(steps[3:] != 1.0)


def test_p_values_are_anytime_valid_under_the_null():
    """Ville: P(sup_t K_t >= 1/alpha) <= alpha; 2,000 finite populations with mean exactly m."""
    rng = np.random.default_rng(11)
    n, sims, alpha = 400, 2000, 0.05
    base = np.concatenate([np.ones(60), np.zeros(60), np.full(n - 120, 0.5)])  # mean exactly 1/2
    x = rng.permuted(np.tile(base, (sims, 1)), axis=1)
    for side in ("above", "below"):
        crossed = np.mean(betting.p_value(x, 0.5, n, side)[:, -1] <= alpha)
        assert crossed <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / sims)


def test_confidence_interval_covers_and_narrows():
    rng = np.random.default_rng(5)
    population = rng.choice([0.0, 0.5, 1.0], size=3000, p=[0.1, 0.8, 0.1])
    truth = float(population.mean())
    x = rng.permutation(population)
    widths = []
    for t in (100, 500, 2000, 3000):
        low, high = betting.confidence_interval(x[:t], 3000, 0.05)
        assert low <= truth <= high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 1e-3  # all documents seen: the mean is known
