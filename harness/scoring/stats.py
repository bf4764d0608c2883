"""Aggregates with uncertainty, as lm-evaluation-harness 0.4 computes them.

stderr of a mean is the sample standard deviation (ddof=1) over sqrt(n); a group weighted by
size pools its subtasks' variances (lm-eval's `pooled_sample_stderr`). The 95% interval is the
normal approximation value ± z(0.975)·stderr, clipped to [0, 1] for 0/1 metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class Aggregate:
    value: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


def normal_interval(value: float, stderr: float | None, bounded: bool) -> tuple[float | None, float | None]:
    """value ± z(0.975)·stderr, clipped to [0, 1] when `bounded`; (None, None) without a stderr."""
    if stderr is None or math.isnan(stderr):
        return None, None
    low, high = value - Z95 * stderr, value + Z95 * stderr
    if bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    return low, high


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def mean_with_stderr(values: Sequence[float]) -> Aggregate:
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return Aggregate(float("nan"), None, None, None, 0)
    value = float(arr.mean())
    stderr = float(arr.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    low, high = normal_interval(value, stderr, _is_binary(arr))
    return Aggregate(value, stderr, low, high, n)


def pooled(parts: Sequence[Aggregate], weight_by_size: bool = True, bounded: bool = True) -> Aggregate:
    """Combine subtask aggregates into a group aggregate (lm-eval 0.4 semantics)."""
    parts = [p for p in parts if p.n > 0]
    if not parts:
        return Aggregate(float("nan"), None, None, None, 0)
    sizes = [p.n for p in parts]
    weights = sizes if weight_by_size else [1] * len(parts)
    value = sum(p.value * w for p, w in zip(parts, weights)) / sum(weights)
    stderr: float | None
    if any(p.stderr is None for p in parts):
        stderr = None
    elif weight_by_size:
        total, k = sum(sizes), len(sizes)
        var = sum((n - 1) * p.stderr**2 * n for p, n in zip(parts, sizes)) / (total - k) if total > k else float("nan")
        stderr = math.sqrt(var / total)
    else:
        stderr = math.sqrt(sum(p.stderr**2 for p in parts)) / len(parts)
    low, high = normal_interval(value, stderr, bounded)
    return Aggregate(value, stderr, low, high, sum(sizes))
