"""Corpus-level aggregations, ported from lm-evaluation-harness 0.4.13's `lm_eval/api/metrics.py`.

A metric aggregated over the corpus has no per-document value to average: each document
stores an *item* in its sample's metrics JSON, as lm-eval's `process_results` returns it (a
tuple becomes a JSON list), and the task's value is computed from all items at once:

| aggregation | item per document | lm-eval function |
|---|---|---|
| `perplexity` | `[loglikelihood]` (a bare number is read too) | `perplexity` |
| `weighted_perplexity` | `[loglikelihood, words or bytes]` | `weighted_perplexity` |
| `bits_per_byte` | `[loglikelihood, bytes]` | `bits_per_byte` |
| `f1`, `matthews_corrcoef` | `[gold index, predicted index]` | `f1_score`, `matthews_corrcoef` (sklearn's, ported) |
| `brier_score` | `[gold index, [softmax of the choices' loglikelihoods]]` | `brier_score` |
| `bleu`, `chrf`, `chrf++`, `ter` | `[reference, prediction]` | sacrebleu's `corpus_*` after `_sacreformat` |

The perplexity item is a one-element list rather than lm-eval's bare float so that no item is a
number: `harness.decisions.compare._num` reads a non-number as NaN, so corpus metrics are never
paired document by document (a per-document loglikelihood is not the metric, and its direction
is the opposite of perplexity's). The stderr is lm-eval's bootstrap (harness.scoring.corpus_stderr):
perplexity, f1 and matthews_corrcoef with 100,000 resamples, the sacrebleu metrics with 100, none
for weighted_perplexity, bits_per_byte and brier_score; the interval is value ± 1.96·stderr.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import sacrebleu

from harness.scoring.corpus_stderr import BOOTSTRAP_ITERS, bootstrap_stderr
from harness.scoring.stats import Aggregate, normal_interval

Item = Any
log = logging.getLogger("harness")


def _mean(arr: Sequence[float]) -> float:
    """lm_eval.api.metrics.mean: sum / len in Python's summation order."""
    return sum(arr) / len(arr)


def _weighted_mean(items: Sequence[Sequence[float]]) -> float:
    """lm_eval.api.metrics.weighted_mean."""
    a, b = zip(*items)
    return sum(a) / sum(b)


def perplexity(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.perplexity: exp(-mean loglikelihood)."""
    lls = [float(i[0]) if isinstance(i, (list, tuple)) else float(i) for i in items]
    return math.exp(-_mean(lls))


def weighted_perplexity(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.weighted_perplexity: exp(-sum ll / sum words-or-bytes)."""
    return math.exp(-_weighted_mean(items))


def bits_per_byte(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.bits_per_byte: -(sum ll / sum bytes) / ln 2."""
    return -_weighted_mean(items) / math.log(2)


def _labels(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    golds, preds = zip(*items)
    return np.asarray(golds), np.asarray(preds)


def f1(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.f1_score: sklearn `f1_score(golds, preds)` (average='binary', pos_label=1,
    zero_division -> 0.0), ported. Where sklearn raises (more than two labels, or two labels without 1)
    lm-eval's run fails; harness gives NaN."""
    golds, preds = _labels(items)
    present = np.unique(np.concatenate([golds, preds]))
    if len(present) > 2 or (len(present) == 2 and 1 not in present):
        return float("nan")
    tp = float(np.sum((golds == 1) & (preds == 1)))
    denom = float(np.sum(golds == 1)) + float(np.sum(preds == 1))
    return 2.0 * tp / denom if denom else 0.0


def matthews_corrcoef(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.matthews_corrcoef: sklearn `matthews_corrcoef(golds, preds)`, ported."""
    golds, preds = _labels(items)
    classes, encoded = np.unique(np.concatenate([golds, preds]), return_inverse=True)
    n = len(golds)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(conf, (encoded[:n], encoded[n:]), 1)
    t_sum, p_sum = conf.sum(axis=1, dtype=np.float64), conf.sum(axis=0, dtype=np.float64)
    n_correct, n_samples = np.trace(conf, dtype=np.float64), p_sum.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    denom = cov_ypyp * cov_ytyt
    return 0.0 if denom == 0 else float(cov_ytyp / np.sqrt(denom))


def brier_score(items: Sequence[Item]) -> float:
    """lm_eval.api.metrics.brier_score: mean over documents of sum((p - one_hot(gold))^2)."""
    gold, predictions = list(zip(*items))
    probs = np.array(predictions, dtype=float)
    one_hot = np.eye(probs.shape[1])[list(gold)]
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


def _non_str_iterable(obj: object) -> bool:
    return isinstance(obj, Iterable) and not isinstance(obj, str)


def sacreformat(refs: Sequence[Any], preds: Sequence[Any]) -> tuple[list, list[str]]:
    """lm_eval.api.metrics._sacreformat: refs to sacrebleu's (M refs, N docs) streams, preds to strings."""
    refs = list(refs)
    if not _non_str_iterable(refs[0]):
        refs = [[ref] for ref in refs]
    streams = list(zip(*refs))
    preds = list(preds)
    if _non_str_iterable(preds[0]):
        preds = [pred[0] for pred in preds]
    return streams, preds


def _sacrebleu(fn: Callable[..., Any], **kwargs: Any) -> Callable[[Sequence[Item]], float]:
    def aggregate(items: Sequence[Item]) -> float:
        refs, preds = sacreformat(*list(zip(*items)))
        return float(fn(preds, refs, **kwargs).score)
    aggregate.__doc__ = f"lm_eval.api.metrics: sacrebleu.{fn.__name__}(preds, refs{', ' if kwargs else ''}" \
                        f"{', '.join(f'{k}={v}' for k, v in kwargs.items())}).score"
    return aggregate


AGGREGATIONS: dict[str, Callable[[Sequence[Item]], float]] = {
    "perplexity": perplexity, "weighted_perplexity": weighted_perplexity, "bits_per_byte": bits_per_byte,
    "f1": f1, "matthews_corrcoef": matthews_corrcoef, "brier_score": brier_score,
    "bleu": _sacrebleu(sacrebleu.corpus_bleu), "chrf": _sacrebleu(sacrebleu.corpus_chrf),
    "chrf++": _sacrebleu(sacrebleu.corpus_chrf, word_order=2), "ter": _sacrebleu(sacrebleu.corpus_ter),
}


def corpus_aggregate(aggregation: str, items: Sequence[Item], bootstrap_iters: int = BOOTSTRAP_ITERS) -> Aggregate:
    """The task-level Aggregate of a corpus metric: lm-eval's value and bootstrap stderr (see the module
    docstring). Where lm-eval's function raises (a gold index out of range for brier_score, choices of
    different counts, no words), lm-eval's run fails; harness logs it and reports NaN, with no stderr."""
    if not items:
        return Aggregate(float("nan"), None, None, None, 0)
    fn = AGGREGATIONS[aggregation]
    try:
        value = fn(items)
    except (ValueError, IndexError, ZeroDivisionError, TypeError) as exc:
        log.warning("%s aggregation failed (%s: %s); reported as NaN", aggregation, type(exc).__name__, exc)
        return Aggregate(float("nan"), None, None, None, len(items))
    stderr = None if math.isnan(value) else bootstrap_stderr(aggregation, fn, items, bootstrap_iters)
    low, high = normal_interval(value, stderr, bounded=aggregation == "f1")
    return Aggregate(value, stderr, low, high, len(items))
