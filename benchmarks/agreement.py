"""Two backends on the same documents: does each pick the same answer, and how far apart are the numbers?

Shared by tests/test_gguf_backend.py (hf vs gguf, CPU) and benchmarks/vllm_fidelity.py (hf vs
vllm, GPU). Both runs go through the real evaluator into one DuckDB file with the shipped
fixtures as data; the comparison reads the stored per-sample loglikelihoods back with SQL.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import duckdb

from harness.core.config import RunConfig, TaskSelection
from harness.run.evaluator import evaluate

FIDELITY_TASKS = ("hellaswag", "mmlu_anatomy", "mmlu_high_school_geography")


@dataclass(frozen=True)
class DocPair:
    doc_id: int
    lls_a: tuple[float, ...]  # one loglikelihood per answer choice
    lls_b: tuple[float, ...]

    @property
    def same_choice(self) -> bool:
        return _argmax(self.lls_a) == _argmax(self.lls_b)

    @property
    def margin_a(self) -> float:
        """How far run A's chosen answer is ahead of its runner-up: a flip needs noise this large."""
        top, second = sorted(self.lls_a, reverse=True)[:2]
        return top - second


@dataclass(frozen=True)
class TaskAgreement:
    task: str
    n_docs: int
    same_choice: int  # documents where both runs' highest-loglikelihood answer is the same
    acc_a: float
    acc_b: float
    deltas: tuple[float, ...]  # |ll_a - ll_b| of every answer choice of every document
    docs: tuple[DocPair, ...]

    @property
    def agreement(self) -> float:
        return self.same_choice / self.n_docs

    @property
    def max_delta(self) -> float:
        return max(self.deltas)

    @property
    def median_delta(self) -> float:
        return statistics.median(self.deltas)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.deltas)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_tasks(model: str, db: Path, tasks: tuple[str, ...] = FIDELITY_TASKS, limit: int | None = None,
              model_args: str | None = None, batch_size: str | None = None) -> str:
    """One evaluation on the fixture documents; returns its run id."""
    selections = [TaskSelection(task, limit=limit, data="fixture") for task in tasks]
    config = RunConfig(tasks=selections, model=model, model_args=model_args, batch_size=batch_size, show_progress=False)
    return evaluate(config, db).run_id


def _samples(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[tuple[str, int], tuple[list[float], dict]]:
    rows = con.execute("SELECT task, doc_id, loglikelihoods, metrics FROM samples WHERE run_id = ?", [run_id]).fetchall()
    return {(task, doc): (list(lls), json.loads(metrics)) for task, doc, lls, metrics in rows}


def compare(db: Path, run_a: str, run_b: str) -> dict[str, TaskAgreement]:
    """Per task: choice agreement, each run's accuracy, and the per-choice |Δ loglikelihood|,
    over run B's documents (which run A must all have: B may be a --limit'ed subset)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        a, b = _samples(con, run_a), _samples(con, run_b)
    finally:
        con.close()
    if not set(b) <= set(a):
        raise ValueError(f"run {run_b} has {len(set(b) - set(a))} documents that run {run_a} lacks")
    out: dict[str, TaskAgreement] = {}
    for task in sorted({t for t, _ in b}):
        keys = sorted(k for k in b if k[0] == task)
        docs = tuple(DocPair(doc, tuple(a[(task, doc)][0]), tuple(b[(task, doc)][0])) for _, doc in keys)
        deltas = tuple(abs(x - y) for d in docs for x, y in zip(d.lls_a, d.lls_b, strict=True))
        out[task] = TaskAgreement(task, len(keys), sum(d.same_choice for d in docs), _mean(a[k][1]["acc"] for k in keys),
                                  _mean(b[k][1]["acc"] for k in keys), deltas, docs)
    return out


def format_table(results: dict[str, TaskAgreement], name_a: str, name_b: str) -> str:
    lines = [f"{'task':<30} {'docs':>5} {'same answer':>12} {'acc ' + name_a:>12} {'acc ' + name_b:>12} "
             f"{'max |Δll|':>10} {'p95 |Δll|':>10} {'median |Δll|':>13}"]
    for r in results.values():
        lines.append(f"{r.task:<30} {r.n_docs:>5} {r.agreement:>11.1%} {r.acc_a:>12.3f} {r.acc_b:>12.3f} "
                     f"{r.max_delta:>10.4f} {r.quantile(0.95):>10.4f} {r.median_delta:>13.4f}")
    return "\n".join(lines)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
