import math

import numpy as np
import pytest
from lm_eval.api.metrics import mean_stderr, pooled_sample_stderr

from harness.scoring.stats import Z95, mean_with_stderr, pooled


def test_mean_stderr_matches_lm_eval():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, size=137).astype(float).tolist()
    agg = mean_with_stderr(values)
    assert agg.value == pytest.approx(np.mean(values))
    assert agg.stderr == pytest.approx(mean_stderr(values), rel=1e-12)
    assert agg.n == 137
    assert agg.ci_low == pytest.approx(agg.value - Z95 * agg.stderr)


def test_binary_interval_is_clipped_to_unit_range():
    agg = mean_with_stderr([1.0] * 9 + [0.0])
    assert agg.ci_high == 1.0 and agg.ci_low < agg.value


def test_single_value_has_no_stderr():
    agg = mean_with_stderr([1.0])
    assert agg.stderr is None and agg.ci_low is None and agg.n == 1


def test_pooled_group_matches_lm_eval_and_concatenation():
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 2, size=n).astype(float) for n in (10, 57, 133)]
    aggs = [mean_with_stderr(p) for p in parts]
    group = pooled(aggs, weight_by_size=True)
    concatenated = np.concatenate(parts)
    assert group.value == pytest.approx(concatenated.mean())
    assert group.stderr == pytest.approx(pooled_sample_stderr([a.stderr for a in aggs], [a.n for a in aggs]), rel=1e-12)
    # lm-eval's comment: pooled stderr "empirically seems to match" the concatenated stderr
    assert group.stderr == pytest.approx(mean_stderr(concatenated.tolist()), rel=0.05)
    assert group.n == 200


def test_unweighted_group_is_mean_of_means():
    aggs = [mean_with_stderr([1.0, 1.0, 0.0, 1.0]), mean_with_stderr([0.0, 1.0])]
    group = pooled(aggs, weight_by_size=False)
    assert group.value == pytest.approx((0.75 + 0.5) / 2)
    assert group.stderr == pytest.approx(math.sqrt(aggs[0].stderr ** 2 + aggs[1].stderr ** 2) / 2)
