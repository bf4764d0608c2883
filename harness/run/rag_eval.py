"""One `harness rag-eval`: samples -> retrieval and judged metrics -> a run with task `rag` in the store.

A rag-eval is an ordinary run: one `runs` row (model `rag:NAME`, backend `rag-eval`, the judge
and its arguments in backend_args), one `run_tasks` row for task `rag`, one `samples` row per
line of the input (prompt = question, target = ground truth, response = the system's answer,
contexts and ids plus the judge's intermediate outputs, metrics = the per-sample scores) and
one `metrics` row per metric. `doc_hash` covers the question, ground truth and relevant ids
only, so two RAG systems evaluated on the same questions pair up in `harness compare`.
Input errors (file, judge spec, embeddings path) are raised before the database opens.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.backends.base import make_backend, parse_model_spec
from harness.core import metadata
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json, sha256_text
from harness.core.redact import redact_args
from harness.scoring.judge.client import JudgeClient, JudgeStats
from harness.scoring.rag import embeddings, retrieval
from harness.scoring.rag.generation import GENERATION_METRICS, JudgeSettings, SampleResult, evaluate_generation
from harness.scoring.rag.io import RagSample, data_fingerprint, load_samples
from harness.scoring.rag.prompts import PROMPTS
from harness.scoring.stats import mean_with_stderr
from harness.store.db import MetricRow, SampleRow, Store

log = logging.getLogger("harness.rag")
TASK = "rag"
VERSION = "1.0"  # changes when a prompt, a formula or the input format changes
INVALID_METRIC = "judge_invalid"


@dataclass
class RagConfig:
    data: Path
    judge: str | None = None
    judge_args: str | None = None
    embeddings: str = embeddings.DEFAULT_EMBEDDINGS
    k: int = 5
    metrics: tuple[str, ...] = ("retrieval",) + GENERATION_METRICS
    strictness: int = 3
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    show_progress: bool = True


@dataclass(frozen=True)
class Fingerprints:
    outputs: str  # the input file: this system's answers, contexts and ids
    items: str  # questions, ground truths and relevant ids only
    method: str  # prompts, judge, settings: stored as the task's prompts_hash


@dataclass
class RagResult:
    run_id: str
    model: str
    metrics: list[MetricRow]
    per_sample: list[dict[str, float | None]]
    judge: JudgeStats | None
    resumed: bool


def select_metrics(text: str | None) -> tuple[str, ...]:
    """`retrieval`, `generation` or metric names, comma-separated; None is everything."""
    if not text:
        return ("retrieval",) + GENERATION_METRICS
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        names = {"retrieval": ["retrieval"], "generation": list(GENERATION_METRICS), "all": ["retrieval", *GENERATION_METRICS]}
        if part not in names and part not in GENERATION_METRICS:
            raise UsageError(f"--metrics: unknown {part!r} (retrieval, generation, {', '.join(GENERATION_METRICS)})")
        chosen += [n for n in names.get(part, [part]) if n not in chosen]
    if not chosen:
        raise UsageError("--metrics is empty")
    return tuple(chosen)


def _aggregate(names: list[str], per_sample: list[dict[str, float | None]]) -> list[MetricRow]:
    rows = []
    for name in names:
        a = mean_with_stderr([m[name] for m in per_sample if m.get(name) is not None])
        if a.n:
            rows.append(MetricRow(TASK, name, a.value, a.stderr, a.ci_low, a.ci_high, a.n))
    return rows


def _sample_row(doc_id: int, s: RagSample, metrics: dict[str, float | None], details: dict) -> SampleRow:
    response = s.output() | {"id": s.id, "line": s.line, "judge": details}
    return SampleRow(task=TASK, doc_id=doc_id, doc_hash=sha256_json(s.doc()), prompt_hash=sha256_text(s.question),
                     target_hash=sha256_text(s.ground_truth), prompt=s.question, target=s.ground_truth,
                     response=response, extracted=s.answer, metrics=metrics, loglikelihoods=None)


def rag_eval(config: RagConfig, db_path: Path) -> RagResult:
    if config.k < 1:
        raise UsageError("--k must be >= 1")
    if config.strictness < 1:
        raise UsageError("--strictness must be >= 1")
    samples = load_samples(config.data)
    judged = [m for m in config.metrics if m in GENERATION_METRICS]
    if judged and not config.judge:
        raise UsageError(f"--judge SPEC is needed for {', '.join(judged)} (or choose --metrics retrieval)")
    backend = make_backend(parse_model_spec(config.judge, config.judge_args)) if judged and config.judge else None
    embedder = embeddings.Embedder(embeddings.resolve(config.embeddings)) if "answer_relevancy" in judged else None
    # built here, before the database opens: an unreachable or unusable judge is an input error
    judge = JudgeClient(backend, show_progress=config.show_progress) if backend is not None else None
    judge_fingerprint = judge.fingerprint if judge is not None else None
    # the system's outputs play the model; the benchmark items (what two systems share) the dataset
    fingerprints = Fingerprints(outputs=data_fingerprint(config.data), items=sha256_json([s.doc() for s in samples]),
                                method=sha256_json({"version": VERSION, "prompts": [p.instruction for p in PROMPTS],
                                                    "settings": asdict(JudgeSettings(strictness=config.strictness)),
                                                    "judge": judge_fingerprint, "k": config.k,
                                                    "embeddings": str(embedder.path) if embedder else None,
                                                    "metrics": list(config.metrics)}))
    name = config.name or config.data.stem
    config_hash = sha256_json({"task": TASK, "outputs": fingerprints.outputs, "method": fingerprints.method})
    store = Store(db_path)
    try:
        if judge is not None:
            judge.store = store
        return _execute(config, store, samples, judge, embedder, name, fingerprints, config_hash)
    finally:
        store.close()
        if backend is not None:
            backend.close()


def _execute(config: RagConfig, store: Store, samples: list[RagSample], judge: JudgeClient | None,
             embedder: embeddings.Embedder | None, name: str, fingerprints: Fingerprints, config_hash: str) -> RagResult:
    backend = judge.backend if judge is not None else None
    run_id = store.resumable_run(config_hash)
    resumed = run_id is not None
    backend_args = {"judge": config.judge, "judge_args": redact_args(backend.spec.args) if backend else {},
                    "embeddings": config.embeddings, "k": config.k, "strictness": config.strictness,
                    "metrics": list(config.metrics)}
    if run_id is None:
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        store.create_run(run_id, config_hash, {"model": f"rag:{name}", "model_fingerprint": fingerprints.outputs,
                                               "backend": "rag-eval", "backend_args": backend_args,
                                               "tasks": [TASK], "limit": None, "seed": None}, config.tags)
    else:
        log.warning("resuming unfinished run %s", run_id)
        store.set_status(run_id, "running")
        store.add_tags(run_id, config.tags)
        # every sample is recomputed (cached judge replies make it cheap) and must replace what a
        # killed attempt stored, which insert-or-ignore would keep
        store.con.execute("DELETE FROM samples WHERE run_id = ? AND task = ?", [run_id, TASK])
    try:
        store.record_task(run_id, {"task": TASK, "version": VERSION, "num_fewshot": 0, "source": f"file:{config.data}",
                                   "fingerprint": fingerprints.items, "n_docs": len(samples), "prompts_hash": fingerprints.method})
        per_sample: list[dict[str, float | None]] = [{} for _ in samples]
        details: list[dict] = [{} for _ in samples]
        names: list[str] = []
        if "retrieval" in config.metrics:
            names += list(retrieval.metric_names(config.k))
            for i, s in enumerate(samples):
                if s.has_retrieval:
                    per_sample[i].update(retrieval.retrieval_metrics(s.retrieved_ids or (), s.relevant_ids or (),
                                                                     config.k, s.retrieved_scores))
        judged = [m for m in config.metrics if m in GENERATION_METRICS]
        if judge is not None and judged:
            results: list[SampleResult] = evaluate_generation(samples, judge, embedder, judged,
                                                              JudgeSettings(strictness=config.strictness))
            names += judged
            for i, r in enumerate(results):
                per_sample[i].update(r.metrics)
                details[i] = r.details
        store.insert_samples(run_id, [_sample_row(i, s, per_sample[i], details[i]) for i, s in enumerate(samples)])
        rows = _aggregate(names, per_sample)
        if judge is not None:
            stats = judge.stats.as_dict()
            rows.append(MetricRow(TASK, INVALID_METRIC, float(stats["invalid"]), None, None, None, stats["judgments"]))
        store.write_metrics(run_id, rows)
        described = backend.describe() if backend else {"backend": None}  # describe() redacts the arguments
        meta = metadata.collect(described, 0)
        meta["tasks"] = {TASK: {"version": VERSION, "source": f"file:{config.data}", "dataset_fingerprint": fingerprints.items,
                                "outputs_fingerprint": fingerprints.outputs, "prompts_hash": fingerprints.method}}
        meta["rag"] = {"judge": judge.stats.as_dict() if judge else None, "judge_fingerprint": judge.fingerprint if judge else None,
                       "embeddings": embedder.describe() if embedder else None, "k": config.k, "strictness": config.strictness}
        store.set_status(run_id, "complete", meta)
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    return RagResult(run_id, f"rag:{name}", rows, per_sample, judge.stats if judge else None, resumed)
