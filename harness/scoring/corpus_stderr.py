"""The bootstrap standard error of a corpus metric, as lm-evaluation-harness 0.4.13 computes it.

lm-eval (`lm_eval.api.metrics.bootstrap_stderr`, called from `evaluator_utils` with its default
`--bootstrap_iters 100000`) resamples the items with replacement `iters` times, in chunks of
min(1000, iters) draws where chunk i draws `random.Random(i).choices(items, k=len(items))`, and
reports the sample standard deviation (n - 1) of the metric over the resamples. It bootstraps
perplexity, f1 and matthews_corrcoef with `iters` resamples and bleu, chrf, chrf++ and ter with
min(iters, 100); weighted_perplexity, bits_per_byte and brier_score get no stderr ("N/A"), and
neither does a task of one document.

Why the draws are not made with `random.choices`: 100,000 resamples of n documents are 100,000·n
Python draws (lm-eval spreads them over a process pool; in one process its perplexity stderr of
5,153 documents takes 27 s, this module's 7 s, and mcc's 2,000 resamples 16.7 s against 0.6 s:
benchmarks/corpus_stderr.py). Python's `random.Random` and numpy's legacy `RandomState` are the same
MT19937 with the same 53-bit double ((a >> 5)·2^26 + (b >> 6)) / 2^53, so `random.Random(i)`'s state
set into a `RandomState` gives the same doubles, and floor(u·n) the same indices as `choices`
(CPython's `choices` without weights). Each resample's metric is then computed from the index
arrays: perplexity with a left-to-right sum (`np.cumsum`, the order of Python's `sum`) and
`math.exp`, f1 and matthews_corrcoef from integer counts. The stderr is lm-eval's to the last bit
(the tests check it against lm-eval's own function); the sacrebleu metrics, 100 resamples, are
computed per resample.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from harness.core.config import DEFAULT_BOOTSTRAP_ITERS as BOOTSTRAP_ITERS

_FEW = ("bleu", "chrf", "chrf++", "ter")  # lm-eval caps these at 100 resamples (each is a sacrebleu call)
_MANY = ("perplexity", "f1", "matthews_corrcoef")


def resamples(aggregation: str, iters: int = BOOTSTRAP_ITERS) -> int:
    """How many resamples lm-eval bootstraps this aggregation with (0: it reports no stderr)."""
    if iters <= 0:
        return 0
    if aggregation in _FEW:
        return min(iters, 100)
    return iters if aggregation in _MANY else 0


def _chunks(n: int, iters: int) -> Iterator[np.ndarray]:
    """lm-eval's resample indices, chunk by chunk: (chunk size, n) arrays, chunk i from random.Random(i)."""
    size = min(1000, iters)
    for i in range(iters // size):
        state = random.Random(i).getstate()[1]
        rs = np.random.RandomState()
        rs.set_state(("MT19937", np.array(state[:624], dtype=np.uint32), state[624]))
        yield np.floor(rs.random_sample((size, n)) * float(n)).astype(np.intp)


def _perplexities(items: Sequence[Any], iters: int) -> list[float]:
    lls = np.array([float(i[0]) if isinstance(i, (list, tuple)) else float(i) for i in items])
    n = len(lls)
    out: list[float] = []
    for idx in _chunks(n, iters):
        sums = np.cumsum(lls[idx], axis=1)[:, -1]  # sequential: Python's sum(arr) bit for bit
        out.extend(math.exp(-(float(s) / n)) for s in sums)
    return out


def _label_arrays(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    golds, preds = zip(*items)
    return np.asarray(golds), np.asarray(preds)


def _f1s(items: Sequence[Any], iters: int) -> list[float]:
    """harness.scoring.corpus.f1 of each resample (NaN where sklearn would raise)."""
    golds, preds = _label_arrays(items)
    labels = np.unique(np.concatenate([golds, preds]))
    tp, g1, p1 = ((golds == 1) & (preds == 1)).astype(np.int64), (golds == 1).astype(np.int64), (preds == 1).astype(np.int64)
    has = {int(label): ((golds == label) | (preds == label)) for label in labels}
    out: list[float] = []
    for idx in _chunks(len(golds), iters):
        counts_tp = tp[idx].sum(axis=1).astype(np.float64)
        denom = (g1[idx].sum(axis=1) + p1[idx].sum(axis=1)).astype(np.float64)
        present = {label: mask[idx].any(axis=1) for label, mask in has.items()}
        n_present = sum((p.astype(np.int64) for p in present.values()), np.zeros(len(idx), dtype=np.int64))
        one = present.get(1, np.zeros(len(idx), dtype=bool))
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(denom > 0, 2.0 * counts_tp / denom, 0.0)
        f1[(n_present > 2) | ((n_present == 2) & ~one)] = np.nan
        out.extend(f1.tolist())
    return out


def _mccs(items: Sequence[Any], iters: int) -> list[float]:
    """harness.scoring.corpus.matthews_corrcoef of each resample: the same float operations on the same
    integer counts (a class absent from a resample adds 0 to every dot product)."""
    golds, preds = _label_arrays(items)
    classes, encoded = np.unique(np.concatenate([golds, preds]), return_inverse=True)
    n = len(golds)
    g_codes, p_codes = encoded[:n], encoded[n:]
    correct = (g_codes == p_codes).astype(np.int64)
    out: list[float] = []
    for idx in _chunks(n, iters):
        g, p = g_codes[idx], p_codes[idx]
        t_sum = np.stack([(g == k).sum(axis=1) for k in range(len(classes))], axis=1).astype(np.float64)
        p_sum = np.stack([(p == k).sum(axis=1) for k in range(len(classes))], axis=1).astype(np.float64)
        n_correct = correct[idx].sum(axis=1).astype(np.float64)
        n_samples = p_sum.sum(axis=1)
        # integer-valued floats below 2**53: every sum of products is exact, in any order
        cov_ytyp = n_correct * n_samples - (t_sum * p_sum).sum(axis=1)
        cov_ypyp = n_samples**2 - (p_sum * p_sum).sum(axis=1)
        cov_ytyt = n_samples**2 - (t_sum * t_sum).sum(axis=1)
        denom = cov_ypyp * cov_ytyt
        with np.errstate(divide="ignore", invalid="ignore"):
            mcc = np.where(denom == 0, 0.0, cov_ytyp / np.sqrt(denom))
        out.extend(mcc.tolist())
    return out


def _each(f: Callable[[Sequence[Any]], float]) -> Callable[[Sequence[Any], int], list[float]]:
    """The metric on every resample, drawn by random.Random(i).choices itself (lm-eval's own loop)."""
    def values(items: Sequence[Any], iters: int) -> list[float]:
        size, out = min(1000, iters), []
        for i in range(iters // size):
            rnd = random.Random(i)
            out.extend(f(rnd.choices(items, k=len(items))) for _ in range(size))
        return out
    return values


def _sample_stddev(values: Sequence[float]) -> float:
    """lm_eval.api.metrics.sample_stddev, in its summation order."""
    mu = sum(values) / len(values)
    return math.sqrt(sum([(x - mu) ** 2 for x in values]) / (len(values) - 1))


def bootstrap_stderr(aggregation: str, f: Callable[[Sequence[Any]], float], items: Sequence[Any],
                     iters: int = BOOTSTRAP_ITERS) -> float | None:
    """lm-eval's stderr of the corpus metric `f` (named `aggregation`) over `items`, or None where it has none."""
    draws = resamples(aggregation, iters)
    if draws == 0 or len(items) < 2:
        return None
    vectorised = {"perplexity": _perplexities, "f1": _f1s, "matthews_corrcoef": _mccs}
    values = vectorised.get(aggregation, _each(f))(items, draws)
    return _sample_stddev(values)
