"""A run whose documents are evaluated a chunk at a time, in an order the caller chooses (the sequential gate).

It is an ordinary run in the store: the same identity, cache, sample rows and aggregation as
`harness.run.evaluator`; its config hash is marked with the purpose (so a later full run of the
same configuration starts its own run and finds every answer of this one in the cache), and when
the caller stops early it is stored with status 'partial' and the documents it covered recorded.
As in a full run, every input check happens before the database is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.backends.base import make_backend, parse_model_spec
from harness.core.config import RunConfig
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.task import Instance, ScoreContext
from harness.run.evaluator import SampleWriter, aggregate_run, open_run, record_tasks, run_identity, run_metadata
from harness.run.prepared import PreparedTask, check_support, prepare_tasks
from harness.run.scheduler import Scheduler
from harness.scoring import code as code_eval
from harness.store.db import Store


@dataclass(frozen=True)
class Item:
    """One document of one prepared task."""

    prepared: PreparedTask
    instance: Instance


class IncrementalRun:
    def __init__(self, config: RunConfig, purpose: str) -> None:
        spec = parse_model_spec(config.model, config.model_args)
        if config.batch_size is not None:
            spec.args["batch_size"] = config.batch_size
        self.config = config
        self.backend = make_backend(spec)
        self.prepared = prepare_tasks(config.tasks, config.seed)
        judged = [p.task.name for p in self.prepared if p.task.judged is not None]
        if judged:
            raise UsageError(f"{', '.join(judged)}: judged tasks cannot be evaluated a chunk at a time")
        check_support(self.backend, self.prepared)
        self.fingerprint = self.backend.fingerprint()
        self.config_hash = sha256_json(run_identity(self.fingerprint, config.seed, self.prepared) | {"purpose": purpose})
        self.box = code_eval.open_sandbox(config.sandbox, config.allow_unsandboxed_code) \
            if code_eval.needs_sandbox([p.task for p in self.prepared]) else None
        self.store: Store | None = None
        self.run_id = ""
        self.evaluated = 0

    def open(self, store_path: Path) -> str:
        """Create (or resume) the run in the store; returns its id."""
        self.store = Store(store_path)
        run_id, _ = open_run(self.store, self.config, self.backend, self.prepared, self.fingerprint, self.config_hash, {})
        record_tasks(self.store, run_id, self.prepared)
        self.scheduler = Scheduler(self.store, self.backend, self.fingerprint, show_progress=self.config.show_progress)
        self.run_id = run_id
        return run_id

    def evaluate(self, items: list[Item]) -> None:
        """Answer and store the samples of these documents (already stored ones are kept as they are)."""
        assert self.store is not None, "open() first"
        by_task: dict[str, list[Instance]] = {}
        tasks = {it.prepared.task.name: it.prepared for it in items}
        for it in items:
            by_task.setdefault(it.prepared.task.name, []).append(it.instance)
        chunk = [PreparedTask(p.task, p.dataset, p.num_fewshot, p.limit, by_task[name]) for name, p in tasks.items()]
        writer = SampleWriter(self.store, self.run_id, chunk, ScoreContext(sandbox=self.box))
        self.scheduler.answer(writer.requests(), on_flush=writer.write_ready)
        if writer.pending:
            raise RuntimeError(f"{len(writer.pending)} documents were left without answers")
        self.evaluated += len(items)

    def finish(self, partial: bool, extra: dict) -> None:
        """Aggregate what was stored and close the run: 'partial' if documents were left out, else 'complete'."""
        assert self.store is not None
        rows, _ = aggregate_run(self.store, self.run_id, self.prepared, self.config.bootstrap_iters)
        self.store.write_metrics(self.run_id, rows)
        meta = run_metadata(self.backend, self.config, self.prepared, self.scheduler) | extra
        self.store.set_status(self.run_id, "partial" if partial else "complete", meta)

    def fail(self) -> None:
        if self.store is not None and self.run_id:
            self.store.set_status(self.run_id, "failed")

    def close(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            if self.box is not None:
                self.box.close()
            self.backend.close()
