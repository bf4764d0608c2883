"""One evaluation run: tasks -> instances -> scheduler -> scores -> store.

Everything that can be wrong with the input (unknown task, missing data, bad model path or
arguments, a request kind the backend cannot answer) is checked before the database is
opened, so bad input leaves it untouched. A run with the same configuration as an unfinished
one resumes it: finished samples are kept, cached answers are not recomputed.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import tasks as catalog
from harness.backends.base import Backend, make_backend, parse_model_spec
from harness.core import metadata
from harness.core.config import DEFAULT_BOOTSTRAP_ITERS, RunConfig
from harness.core.hashing import sha256_json, sha256_text
from harness.core.redact import redact_args
from harness.core.requests import Request, request_hash
from harness.core.task import Instance, ScoreContext
from harness.run import judged as judge_stage
from harness.run.prepared import PreparedTask, check_support, prepare_tasks
from harness.run.ray_cluster import REMOTE_BACKENDS, ray_session
from harness.run.ray_pool import RayBackend
from harness.run.scheduler import Scheduler, ScheduleStats
from harness.scoring import code as code_eval
from harness.scoring.corpus import corpus_aggregate
from harness.scoring.stats import Aggregate, mean_with_stderr, pooled
from harness.store.db import MetricRow, SampleRow, Store

log = logging.getLogger("harness")


@dataclass
class RunResult:
    run_id: str
    model: str
    resumed: bool
    metrics: list[MetricRow]
    stats: ScheduleStats
    groups: dict[str, str]  # group name -> how it is weighted


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _score(p: PreparedTask, pending: list[Instance], answers: dict, context: ScoreContext) -> list[SampleRow]:
    assert p.task.score is not None, "judged tasks are scored by their judged stage"
    rows: list[SampleRow] = []
    for inst in pending:
        scored = p.task.score(inst, [answers[request_hash(r)] for r in inst.requests], context)
        rows.append(
            SampleRow(
                task=p.task.name, doc_id=inst.doc_id, doc_hash=sha256_json(inst.doc), prompt_hash=sha256_text(inst.prompt),
                target_hash=sha256_text(inst.target), prompt=inst.prompt, target=inst.target, response=scored.response,
                extracted=scored.extracted, metrics=scored.metrics, loglikelihoods=scored.loglikelihoods,
            )
        )
    return rows


class SampleWriter:
    """Stores each document's sample as soon as all of its requests are answered."""

    def __init__(self, store: Store, run_id: str, prepared: list[PreparedTask], context: ScoreContext) -> None:
        self.store, self.run_id, self.context = store, run_id, context
        self.pending: list[tuple[PreparedTask, Instance, list[str]]] = []
        for p in prepared:
            done = store.done_docs(run_id, p.task.name)
            self.pending.extend((p, i, [request_hash(r) for r in i.requests]) for i in p.instances if i.doc_id not in done)

    def requests(self) -> Iterator[Request]:
        return (r for _, inst, _ in self.pending for r in inst.requests)

    def write_ready(self, answers: dict) -> None:
        ready, waiting = [], []
        for item in self.pending:
            (ready if all(h in answers for h in item[2]) else waiting).append(item)
        if ready:
            self.store.insert_samples(self.run_id, [row for p, inst, _ in ready for row in _score(p, [inst], answers, self.context)])
            self.pending = waiting


def _task_aggregates(store: Store, run_id: str, p: PreparedTask, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS) -> dict[str, Aggregate]:
    frame = store.sample_metrics(run_id, p.task.name)
    per_doc = [json.loads(m) for m in frame["metrics"]]
    out: dict[str, Aggregate] = {}
    for spec in p.task.metrics:
        values = [d[spec.name] for d in per_doc if d.get(spec.name) is not None]
        # a mean of per-document values, or lm-eval's corpus aggregation of per-document items
        out[spec.name] = mean_with_stderr(values) if spec.aggregation == "mean" else corpus_aggregate(spec.aggregation, values, bootstrap_iters)
    return out


def in_unit_interval(aggregations: list[str | None], parts: list[Aggregate]) -> bool:
    """Whether a group's interval is clipped to [0, 1]: a mean or f1 in every subtask, every value inside."""
    return all(a in ("mean", "f1") for a in aggregations) and all(0.0 <= p.value <= 1.0 for p in parts if p.n)


def aggregate_run(store: Store, run_id: str, prepared: list[PreparedTask],
                  bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS) -> tuple[list[MetricRow], dict[str, str]]:
    by_task = {p.task.name: _task_aggregates(store, run_id, p, bootstrap_iters) for p in prepared}
    aggregation = {(p.task.name, m.name): m.aggregation for p in prepared for m in p.task.metrics}
    rows = [MetricRow(task, metric, a.value, a.stderr, a.ci_low, a.ci_high, a.n) for task, aggs in by_task.items() for metric, a in aggs.items()]
    groups: dict[str, str] = {}
    for group in catalog.groups_containing(list(by_task)):
        leaves = catalog.expand([group.name])
        common = set.intersection(*(set(by_task[t]) for t in leaves))
        for metric in sorted(common):
            # lm-eval's aggregate_subtask_metrics for every metric, corpus ones included: the mean of the
            # subtasks' values weighted by size, their stderrs pooled; the interval is clipped to [0, 1]
            # only for a metric that lives there (not perplexity, bleu or mcc)
            parts = [by_task[t][metric] for t in leaves]
            bounded = in_unit_interval([aggregation.get((t, metric)) for t in leaves], parts)
            a = pooled(parts, weight_by_size=group.weight_by_size, bounded=bounded)
            rows.append(MetricRow(group.name, metric, a.value, a.stderr, a.ci_low, a.ci_high, a.n))
        groups[group.name] = "weighted by subtask size" if group.weight_by_size else "unweighted mean of subtasks"
    return rows, groups


def evaluate(config: RunConfig, store_path: Path) -> RunResult:
    spec = parse_model_spec(config.model, config.model_args)
    if config.batch_size is not None:
        spec.args["batch_size"] = config.batch_size
    backend = make_backend(spec)
    prepared = prepare_tasks(config.tasks, config.seed)
    check_support(backend, prepared)
    if config.ray is not None and backend.spec.prefix in REMOTE_BACKENDS:
        log.warning("%s is already a server: --executor ray starts no replicas for it", backend.spec.text)
    elif config.ray is not None:
        with ray_session(config.ray):  # a no-op when the caller already holds the session (several models)
            return _evaluate(config, store_path, _on_ray(backend, config), prepared)
    return _evaluate(config, store_path, backend, prepared)


def _on_ray(backend: Backend, config: RunConfig) -> Backend:
    """The backend whose requests Ray replicas answer, started (and so checked) before the database opens."""
    assert config.ray is not None
    ray_backend = RayBackend(backend, config.ray)
    try:
        ray_backend.start()
    except BaseException:
        ray_backend.close()
        raise
    return ray_backend


def _evaluate(config: RunConfig, store_path: Path, backend: Backend, prepared: list[PreparedTask]) -> RunResult:
    judge = judge_stage.open_judge(config.judge, prepared, config.seed)  # None unless a selected task is judged
    fingerprint = backend.fingerprint()
    identity = run_identity(fingerprint, config.seed, prepared)
    if judge is not None:
        identity["judge"] = judge.identity()  # a run graded by another judge is another run
    config_hash = sha256_json(identity)
    # Chosen once per run and before the database opens, so "no sandbox" is a clean exit 2.
    box = code_eval.open_sandbox(config.sandbox, config.allow_unsandboxed_code) \
        if code_eval.needs_sandbox([p.task for p in prepared]) else None
    try:
        store = Store(store_path)
        try:
            return _execute(config, store, backend, prepared, fingerprint, config_hash, ScoreContext(sandbox=box), judge)
        finally:
            store.close()
    finally:
        if box is not None:
            box.close()
        if judge is not None:
            judge.close()
        backend.close()


def run_identity(fingerprint: str, seed: int, prepared: list[PreparedTask]) -> dict:
    """What makes two runs the same run (its hash is the config hash a re-run resumes by)."""
    return {"model": fingerprint, "seed": seed,
            "tasks": [[p.task.name, p.task.version, p.num_fewshot, p.limit, p.dataset.fingerprint, p.prompts_hash]
                      for p in prepared]}


def open_run(store: Store, config: RunConfig, backend: Backend, prepared: list[PreparedTask], fingerprint: str,
             config_hash: str, metadata_fields: dict) -> tuple[str, bool]:
    """(run id, resumed): the unfinished run with this config hash set running again, else a new run row."""
    run_id = store.resumable_run(config_hash)
    if run_id is not None:
        log.warning("resuming unfinished run %s", run_id)
        store.set_status(run_id, "running")
        store.add_tags(run_id, config.tags)
        return run_id, True
    run_id = new_run_id()
    store.create_run(
        run_id, config_hash,
        {"model": backend.spec.text, "model_fingerprint": fingerprint, "backend": backend.name,
         "backend_args": redact_args(backend.spec.args), "suite": config.suite, "tasks": [p.task.name for p in prepared],
         "num_fewshot": None, "limit": None, "seed": config.seed, "metadata": metadata_fields},
        config.tags,
    )
    return run_id, False


def record_tasks(store: Store, run_id: str, prepared: list[PreparedTask]) -> None:
    for p in prepared:
        store.record_task(run_id, {"task": p.task.name, "version": p.task.version, "num_fewshot": p.num_fewshot,
                                   "source": p.dataset.source, "fingerprint": p.dataset.fingerprint,
                                   "n_docs": len(p.instances), "prompts_hash": p.prompts_hash})


def run_metadata(backend: Backend, config: RunConfig, prepared: list[PreparedTask], scheduler: Scheduler) -> dict:
    """Reproducibility metadata of a finished run (describe() redacts the backend's arguments)."""
    meta = metadata.collect(backend.describe(), config.seed)
    meta["tasks"] = {p.task.name: {"version": p.task.version, "num_fewshot": p.num_fewshot, "limit": p.limit,
                                   "source": p.dataset.source, "dataset_fingerprint": p.dataset.fingerprint,
                                   "prompts_hash": p.prompts_hash} for p in prepared}
    meta["schedule"] = vars(scheduler.stats)
    meta["bootstrap_iters"] = config.bootstrap_iters
    return meta


def _execute(config: RunConfig, store: Store, backend: Backend, prepared: list[PreparedTask], fingerprint: str, config_hash: str,
             context: ScoreContext, judge: judge_stage.JudgeSession | None = None) -> RunResult:
    run_id, resumed = open_run(store, config, backend, prepared, fingerprint, config_hash,
                               {"judge": judge.describe()} if judge is not None else {})
    scheduler = Scheduler(store, backend, fingerprint, show_progress=config.show_progress)
    try:
        record_tasks(store, run_id, prepared)
        writer = SampleWriter(store, run_id, [p for p in prepared if p.task.judged is None], context)
        scheduler.answer(writer.requests(), on_flush=writer.write_ready)
        if writer.pending:
            raise RuntimeError(f"{len(writer.pending)} documents were left without answers")
        judge_stage.run_stages(store, run_id, prepared, scheduler, judge)  # judged tasks: answer, then grade
        rows, groups = aggregate_run(store, run_id, prepared, config.bootstrap_iters)
        rows = judge_stage.finish_metrics(store, run_id, prepared, rows, judge)
        store.write_metrics(run_id, rows)
        meta = run_metadata(backend, config, prepared, scheduler)
        if judge is not None:
            meta["judge"] = judge.describe()
        store.set_status(run_id, "complete", meta)
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    return RunResult(run_id, backend.spec.text, resumed, rows, scheduler.stats, groups)
