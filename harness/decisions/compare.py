"""Paired comparison of two stored runs.

Only documents present in both runs count: samples are joined on (task, doc_hash, prompt_hash),
so a document shown with a different prompt is not a pair (on the prompt hash alone against a run
imported from lm-eval: harness.decisions.pairing). Values A and B are the means over
the paired documents (not the stored run metrics, which may cover other documents). Per task
and per-sample metric: delta B - A with a 95% interval and a p-value (harness.decisions.paired), Holm
adjustment across every tested metric, the flipped samples, and, where both runs stored
per-choice loglikelihoods, how far they moved. Group rows are not tested: a group is made of
its tasks, which are.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from harness.core.errors import UsageError
from harness.decisions import paired
from harness.decisions.pairing import PairKey, pair_key, pairs_sql
from harness.store.db import Store

MIN_OVERLAP = 30  # fewer paired documents than this per task gives a warning
EXCERPT_CHARS = 240
TOP_MOVERS = 20


@dataclass(frozen=True)
class MetricComparison:
    task: str
    metric: str
    kind: str  # "binary" (all values 0/1) or "continuous"
    higher_is_better: bool
    value_a: float
    value_b: float
    delta: float  # b - a
    ci_low: float
    ci_high: float  # 95% CI of the paired delta
    p_value: float
    p_adjusted: float  # exact McNemar (binary) / paired bootstrap (continuous); Holm across all metrics
    n_paired: int
    improved: int
    regressed: int  # paired samples that flipped in each direction (binary), else counts of up/down


@dataclass(frozen=True)
class Flip:
    task: str
    doc_id: int
    metric: str
    prompt_excerpt: str
    answer_a: str | None
    answer_b: str | None
    target: str
    value_a: float
    value_b: float


@dataclass(frozen=True)
class LoglikelihoodShift:
    task: str
    n: int
    agreement: float  # share of samples whose chosen answer (argmax loglikelihood) is the same
    diffs: list[float]  # per-choice b - a loglikelihood differences
    pairs: list[tuple[float, float]]  # (a, b) per choice
    movers: list[tuple[int, float]]  # (doc_id, max |diff|) biggest first, top 20


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    model_a: str
    model_b: str
    metrics: list[MetricComparison]
    flips: list[Flip]
    loglikelihood: list[LoglikelihoodShift]
    warnings: list[str]


_PAIRED_COLUMNS = """a.task, a.doc_id, a.prompt, a.target, a.extracted AS extracted_a, b.extracted AS extracted_b,
       a.metrics::VARCHAR AS metrics_a, b.metrics::VARCHAR AS metrics_b,
       a.loglikelihoods AS ll_a, b.loglikelihoods AS ll_b"""


def higher_is_better(task: str, metric: str) -> bool:
    from harness import tasks as catalog

    try:
        specs = catalog.get_task(task).metrics
    except Exception:  # a task this installation does not know (imported run): assume accuracy-like
        return True
    return next((m.higher_is_better for m in specs if m.name == metric), True)


def _answer(extracted: str | None, metric: str) -> str | None:
    """Multiple choice stores the chosen text; generation a JSON {filter: answer}, picked by the metric's filter."""
    if not isinstance(extracted, str) or "," not in metric:
        return extracted if isinstance(extracted, str) else None
    try:
        by_filter = json.loads(extracted)
    except ValueError:
        return extracted
    if isinstance(by_filter, dict):
        value = by_filter.get(metric.split(",", 1)[1])
        return None if value is None else str(value)
    return extracted


def _excerpt(prompt: str | None) -> str:
    text = (prompt or "").strip()
    return text if len(text) <= EXCERPT_CHARS else "…" + text[-EXCERPT_CHARS:]


def _task_warnings(store: Store, run_a: str, run_b: str, key: PairKey) -> list[str]:
    cols = "task, task_version, num_fewshot, dataset_fingerprint, prompts_hash"
    ta = store.con.execute(f"SELECT {cols} FROM run_tasks WHERE run_id = ?", [run_a]).df().set_index("task")
    tb = store.con.execute(f"SELECT {cols} FROM run_tasks WHERE run_id = ?", [run_b]).df().set_index("task")
    out = []
    for task in sorted(set(ta.index) ^ set(tb.index)):
        out.append(f"{task}: only in run {'A' if task in ta.index else 'B'}")
    labels = {"task_version": "task version", "num_fewshot": "num_fewshot (shots)",
              "dataset_fingerprint": "dataset fingerprint", "prompts_hash": "prompt hashes"}
    if key.across_tools:  # the two tools fingerprint datasets and prompt lists differently: never equal
        out.append("one run was imported from lm-eval: documents are paired on their prompt hashes")
        del labels["dataset_fingerprint"], labels["prompts_hash"]
    for task in sorted(set(ta.index) & set(tb.index)):
        for col, label in labels.items():
            va, vb = ta.at[task, col], tb.at[task, col]
            if not (pd.isna(va) and pd.isna(vb)) and va != vb:
                shown = [str(v)[:12] if col in ("dataset_fingerprint", "prompts_hash") else str(v) for v in (va, vb)]
                out.append(f"{task}: runs differ in {label}: A {shown[0]}, B {shown[1]}")
    return out


def _sample_counts(store: Store, run_id: str) -> dict[str, int]:
    return dict(store.con.execute("SELECT task, count(*) FROM samples WHERE run_id = ? GROUP BY task", [run_id]).fetchall())


def _loglikelihood_shift(task: str, rows: pd.DataFrame) -> LoglikelihoodShift | None:
    """Per-choice differences, vectorised over all documents with the same number of choices."""
    usable = [(int(d), la, lb) for d, la, lb in zip(rows["doc_id"].tolist(), rows["ll_a"].tolist(), rows["ll_b"].tolist())
              if isinstance(la, (list, np.ndarray)) and isinstance(lb, (list, np.ndarray)) and len(la) == len(lb) > 0]
    if not usable:
        return None
    diffs: list[float] = []
    pairs: list[tuple[float, float]] = []
    movers: list[tuple[int, float]] = []
    agree = 0
    for width in sorted({len(la) for _, la, _ in usable}):
        group = [u for u in usable if len(u[1]) == width]
        va = np.array([u[1] for u in group], dtype=float)
        vb = np.array([u[2] for u in group], dtype=float)
        d = vb - va
        agree += int((va.argmax(axis=1) == vb.argmax(axis=1)).sum())
        diffs.extend(d.ravel().tolist())
        pairs.extend(zip(va.ravel().tolist(), vb.ravel().tolist()))
        movers.extend(zip((u[0] for u in group), np.abs(d).max(axis=1).tolist()))
    movers.sort(key=lambda m: -m[1])
    return LoglikelihoodShift(task, len(usable), agree / len(usable), diffs, pairs, movers[:TOP_MOVERS])


def _flips(task: str, metric: str, columns: dict[str, list], ma: list[dict], mb: list[dict], indices: np.ndarray) -> list[Flip]:
    """Flipped samples from plain lists (row access through pandas costs ~0.1 ms a row)."""
    out = []
    for i in indices.tolist():
        target = columns["target"][i]
        out.append(Flip(task, int(columns["doc_id"][i]), metric, _excerpt(columns["prompt"][i]),
                        _answer(columns["extracted_a"][i], metric), _answer(columns["extracted_b"][i], metric),
                        target if isinstance(target, str) else "", _num(ma[i].get(metric)), _num(mb[i].get(metric))))
    return out


def compare_runs(store: Store, run_a: str, run_b: str, *, alpha: float = 0.05, n_bootstrap: int = 10_000,
                 seed: int = 0) -> Comparison:
    """Compare run B against run A (ids already resolved). `alpha` is recorded for callers; CIs are 95%."""
    info_a, info_b = store.run(run_a), store.run(run_b)
    key = pair_key(store, run_a, run_b)
    frame = store.con.execute(pairs_sql(key, _PAIRED_COLUMNS), [run_a, run_b]).df()
    if frame.empty:
        raise UsageError(f"runs {run_a} and {run_b} share no documents (joined on {key.describe()})")
    warnings = _task_warnings(store, run_a, run_b, key)
    counts_a, counts_b = _sample_counts(store, run_a), _sample_counts(store, run_b)

    tests: list[tuple[str, str, str, bool, np.ndarray, np.ndarray, paired.PairedTest]] = []
    flips: list[Flip] = []
    shifts: list[LoglikelihoodShift] = []
    for task, rows in frame.groupby("task", sort=True):
        rows = rows.reset_index(drop=True)
        n_task = len(rows)
        total = min(counts_a.get(task, 0), counts_b.get(task, 0))
        if n_task < MIN_OVERLAP or n_task < 0.5 * max(counts_a.get(task, 0), counts_b.get(task, 0)):
            warnings.append(f"{task}: only {n_task} paired documents (run A has {counts_a.get(task, 0)}, "
                            f"run B {counts_b.get(task, 0)}); few documents overlap")
        elif n_task < total:
            warnings.append(f"{task}: {n_task} of {total} documents paired")
        columns = {c: rows[c].tolist() for c in ("doc_id", "prompt", "target", "extracted_a", "extracted_b")}
        ma = [json.loads(m) if m else {} for m in rows["metrics_a"]]
        mb = [json.loads(m) if m else {} for m in rows["metrics_b"]]
        names = sorted(set().union(*ma) & set().union(*mb))
        for metric in names:
            a = np.array([_num(m.get(metric)) for m in ma])
            b = np.array([_num(m.get(metric)) for m in mb])
            ok = ~(np.isnan(a) | np.isnan(b))
            if not ok.any():
                continue
            a, b = a[ok], b[ok]
            binary = paired.is_binary(a, b)
            result = paired.mcnemar_exact(a, b) if binary else paired.paired_bootstrap(a, b, n_bootstrap, seed)
            tests.append((str(task), metric, "binary" if binary else "continuous",
                          higher_is_better(str(task), metric), a, b, result))
            if binary:
                flips.extend(_flips(str(task), metric, columns, ma, mb, np.flatnonzero(ok)[a != b]))
        shift = _loglikelihood_shift(str(task), rows)
        if shift is not None:
            shifts.append(shift)

    adjusted = paired.holm([t[6].p_value for t in tests])
    metrics = [
        MetricComparison(task, metric, kind, hib, float(a.mean()), float(b.mean()), r.delta, r.ci_low, r.ci_high,
                         r.p_value, float(adj), r.n, r.improved, r.regressed)
        for (task, metric, kind, hib, a, b, r), adj in zip(tests, adjusted)
    ]
    return Comparison(run_a, run_b, str(info_a["model"]), str(info_b["model"]), metrics, flips, shifts, warnings)


def _num(value: object) -> float:
    if value is None or isinstance(value, (dict, list, str)):
        return float("nan")
    return float(value)  # type: ignore[arg-type]


def comparison_to_dict(comparison: Comparison) -> dict:
    """JSON-ready: NaN becomes null."""

    def clean(value: object) -> object:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(asdict(comparison))  # type: ignore[return-value]
