"""A stored run as the JSON summary `harness run --json` writes, and as a short markdown page.

One builder for both `--json` and the MLflow artifacts, so what a tracker shows is byte for byte
what the command line wrote; it takes metric rows of either kind (the evaluator's `MetricRow`s or
the store's metrics frame as tuples), which both carry task, metric, value, stderr and n.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _number(value: Any) -> float | None:
    """None for a missing stderr: the store's frame says NaN where the evaluator says None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def summary(run_id: str, model: str, metric_rows: Iterable[Any]) -> dict:
    """{run_id, model, tasks: {task: {metric: {value, stderr, n}}}}."""
    tasks: dict[str, dict] = {}
    for row in metric_rows:
        tasks.setdefault(row.task, {})[row.metric] = {"value": _number(row.value), "stderr": _number(row.stderr),
                                                      "n": int(row.n)}
    return {"run_id": run_id, "model": model, "tasks": tasks}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def markdown(run: dict, run_summary: dict) -> str:
    """The run as a markdown page: what ran (model, backend, seed, tasks with shots and data) and its metrics."""
    lines = [f"# harness run {run['run_id']}", "",
             f"- model: `{run_summary['model']}` (backend {run['backend']}, fingerprint `{str(run['model_fingerprint'])[:16]}`)",
             f"- status: {run['status']}; seed {run['seed']}; suite {run.get('suite') or '-'}; "
             f"tags {', '.join(run['tags']) or '-'}", ""]
    tasks = run["task_rows"]
    if len(tasks):
        lines += ["| task | version | shots | docs | data |", "|---|---|---|---|---|"]
        lines += [f"| {t.task} | {t.task_version} | {t.num_fewshot} | {t.n_docs} | {t.data_source} |" for t in tasks.itertuples()]
        lines.append("")
    lines += ["| task | metric | value | stderr | n |", "|---|---|---|---|---|"]
    for task, metrics in run_summary["tasks"].items():
        for metric, m in metrics.items():
            lines.append(f"| {task} | {metric} | {_cell(m['value'])} | {_cell(m['stderr'])} | {m['n']} |")
    return "\n".join(lines) + "\n"
