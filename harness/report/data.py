"""SQL that feeds the static report: everything is aggregated inside DuckDB.

A site for a million sample rows must build in seconds, so no query here pulls all samples into
Python as objects: the sample browser's rows are serialised to JSON by DuckDB itself, at most
SAMPLES_PER_RUN of them per run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.store.db import Store

SAMPLES_PER_RUN = 2000
PROMPT_CHARS = 800  # the tail of a prompt: few-shot prompts end with the question that was asked
TEXT_CHARS = 300
# Which metric of a task the leaderboard shows (the others are on the run page).
PRIMARY_METRICS = ("acc_norm", "acc", "exact_match", "pass@1", "f1", "score")


@dataclass
class MetricCell:
    task: str
    metric: str
    value: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None


@dataclass
class RunSummary:
    run_id: str
    status: str
    created_at: str
    finished_at: str | None
    model: str
    model_fingerprint: str
    backend: str
    backend_args: dict
    suite: str | None
    num_fewshot: int | None
    limit_docs: int | None
    seed: int | None
    metadata: dict
    tags: list[str] = field(default_factory=list)
    metrics: list[MetricCell] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    n_samples: int = 0
    latest: bool = False  # the newest complete run of its model and suite


def _json(text: str | None) -> object:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def load_runs(store: Store) -> list[RunSummary]:
    con = store.con
    rows = con.execute(
        """SELECT run_id, status, strftime(created_at, '%Y-%m-%d %H:%M:%S'), strftime(finished_at, '%Y-%m-%d %H:%M:%S'),
                  model, model_fingerprint, backend, backend_args, suite, num_fewshot, limit_docs, seed, metadata,
                  status = 'complete' AND row_number() OVER (
                      PARTITION BY model, coalesce(suite, ''), status = 'complete' ORDER BY created_at DESC, run_id) = 1
           FROM runs ORDER BY created_at DESC, run_id"""
    ).fetchall()
    runs = {
        r[0]: RunSummary(run_id=r[0], status=r[1], created_at=r[2], finished_at=r[3], model=r[4], model_fingerprint=r[5],
                         backend=r[6], backend_args=_json(r[7]), suite=r[8], num_fewshot=r[9], limit_docs=r[10],
                         seed=r[11], metadata=_json(r[12]), latest=bool(r[13]))
        for r in rows
    }
    for run_id, tag in con.execute("SELECT run_id, tag FROM run_tags ORDER BY run_id, tag").fetchall():
        if run_id in runs:
            runs[run_id].tags.append(tag)
    for run_id, *cell in con.execute(
        "SELECT run_id, task, metric, value, stderr, ci_low, ci_high, n FROM metrics ORDER BY run_id, task, metric"
    ).fetchall():
        if run_id in runs:
            runs[run_id].metrics.append(MetricCell(*cell))
    task_cols = ("task", "task_version", "num_fewshot", "data_source", "dataset_fingerprint", "n_docs", "prompts_hash")
    for run_id, *values in con.execute(f"SELECT run_id, {', '.join(task_cols)} FROM run_tasks ORDER BY run_id, task").fetchall():
        if run_id in runs:
            runs[run_id].tasks.append(dict(zip(task_cols, values)))
    for run_id, count in con.execute("SELECT run_id, count(*) FROM samples GROUP BY run_id").fetchall():
        if run_id in runs:
            runs[run_id].n_samples = int(count)
    return list(runs.values())


def primary_metric(metrics: set[str]) -> str:
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name
    return sorted(metrics)[0]


def leaderboard_columns(runs: list[RunSummary]) -> list[tuple[str, str]]:
    """(task, metric) per task that any complete run has, with the task's primary metric."""
    by_task: dict[str, set[str]] = {}
    for run in runs:
        if run.status == "complete":
            for cell in run.metrics:
                by_task.setdefault(cell.task, set()).add(cell.metric)
    return [(task, primary_metric(metrics)) for task, metrics in sorted(by_task.items())]


def sample_json(store: Store, limit: int = SAMPLES_PER_RUN) -> Iterator[tuple[str, int, str]]:
    """(run_id, embedded count, JSON array text) per run; '<' is escaped so the text is safe in a <script>."""
    cursor = store.con.cursor()
    cursor.execute(
        f"""WITH ranked AS (
                SELECT run_id, task, doc_id, prompt, target, extracted, response, metrics,
                       row_number() OVER (PARTITION BY run_id, task ORDER BY doc_id) AS k,
                       count(DISTINCT task) OVER (PARTITION BY run_id) AS n_tasks
                FROM samples),
            picked AS (
                SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY k, task) AS overall FROM ranked
                WHERE k <= greatest(1, {int(limit)} // n_tasks))
            SELECT run_id, count(*),
                   replace(to_json(list(struct_pack(
                       t := task, d := doc_id,
                       p := CASE WHEN length(prompt) > {PROMPT_CHARS} THEN '…' || right(prompt, {PROMPT_CHARS}) ELSE prompt END,
                       g := left(target, {TEXT_CHARS}),
                       a := left(coalesce(extracted, CAST(response AS VARCHAR)), {TEXT_CHARS}),
                       m := metrics) ORDER BY task, doc_id))::VARCHAR, '<', '\\u003c')
            FROM picked WHERE overall <= {int(limit)} GROUP BY run_id"""
    )
    while True:
        batch = cursor.fetchmany(64)
        if not batch:
            break
        for run_id, count, text in batch:
            yield run_id, int(count), text
    cursor.close()
