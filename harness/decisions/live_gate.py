"""`harness gate --sequential`: evaluate the candidate on the baseline's documents a chunk at a time, stop once decided.

The baseline is a stored run with per-sample results. The candidate model is evaluated live, on the
documents it shares with the baseline (same task, document hash and prompt hash), each task's
documents in a random order drawn from the gate's seed; every open task gets its next chunk at each
look, so tasks advance together and one large task does not hold the others. After each look every
gated metric's tests are updated (harness.decisions.sequential); a task whose gated metrics are all
decided takes no more documents, and the gate stops evaluating (and closes the backend) as soon as
every metric is decided or out of documents. The candidate's run is an ordinary run, stored
'partial' when documents were left out; the gate and its trace are stored beside it.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.config import RunConfig, TaskSelection
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json, sha256_text
from harness.decisions import pairing
from harness.decisions.compare import higher_is_better
from harness.decisions.gate import Policy
from harness.decisions.sequential import MetricTrack, SequentialTest, next_chunk
from harness.run.incremental import IncrementalRun, Item
from harness.store import gates as gate_store
from harness.store.db import Store


@dataclass
class Candidate:
    model: str
    model_args: str | None = None
    batch_size: str | None = None
    tasks: list[TaskSelection] | None = None  # default: the baseline run's tasks and shots
    tags: list[str] = field(default_factory=list)
    show_progress: bool = True
    sandbox: str = "auto"
    allow_unsandboxed_code: bool = False


@dataclass(frozen=True)
class Baseline:
    run_id: str
    model: str
    seed: int
    tasks: list[TaskSelection]
    values: dict[str, dict[tuple[str, str], dict]]  # task -> (doc_hash, prompt_hash) -> per-sample metrics
    scheme: str = pairing.HARNESS  # lm-eval: keyed ("", prompt_hash), its doc hashes are not ours (decisions.pairing)

    def key(self, doc: dict, prompt: str) -> tuple[str, str]:
        return pairing.sample_key(self.scheme, sha256_json(doc), sha256_text(prompt))


@dataclass
class SequentialGateResult:
    gate_id: str
    baseline: Baseline
    candidate_run: str
    candidate_model: str
    seed: int
    policy: Policy
    test: SequentialTest
    skipped: list[str]
    wall_seconds: float
    partial: bool

    @property
    def passed(self) -> bool:
        return self.test.passed

    def docs(self) -> tuple[int, int]:
        """(documents evaluated, documents available) over the gated tasks."""
        used: dict[str, int] = {}
        available: dict[str, int] = {}
        for t in self.test.tracks:
            used[t.task] = max(used.get(t.task, 0), t.n)
            available[t.task] = t.available
        return sum(used.values()), sum(available.values())


def load_baseline(store: Store, ref: str) -> Baseline:
    run_id = store.resolve_run(ref)
    info = store.run(run_id)
    if info["status"] != "complete":
        raise UsageError(f"baseline run {run_id} is not complete (status {info['status']})")
    rows = store.con.execute("SELECT task, doc_id, doc_hash, prompt_hash, metrics::VARCHAR FROM samples WHERE run_id = ? "
                             "ORDER BY task, doc_id", [run_id]).fetchall()
    if not rows:
        raise UsageError(f"baseline run {run_id} has no per-sample results: the sequential gate pairs documents")
    scheme = pairing.hash_scheme(info["metadata"])
    values: dict[str, dict[tuple[str, str], dict]] = {}
    for task, _doc_id, doc_hash, prompt_hash, metrics in rows:
        values.setdefault(task, {}).setdefault(pairing.sample_key(scheme, doc_hash, prompt_hash), json.loads(metrics or "{}"))
    selections = [TaskSelection(r.task, int(r.num_fewshot)) for r in info["task_rows"].itertuples() if r.task in values]
    seed = info["seed"]
    if seed is None or seed != seed:  # an imported run may not say (NULL reads back as NaN)
        raise UsageError(f"baseline run {run_id} records no seed, so its prompts cannot be rebuilt for the candidate")
    return Baseline(run_id, str(info["model"]), int(seed), selections, values, scheme)


def _per_sample(values: list[dict], metric: str) -> list[float] | None:
    out = []
    for v in values:
        x = v.get(metric)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return None
        out.append(float(x))
    return out


def _tracks(baseline: Baseline, shared: dict[str, list[tuple[str, str]]], policy: Policy) -> tuple[list[MetricTrack], list[str]]:
    tracks, skipped = [], []
    for task, keys in sorted(shared.items()):
        if len(keys) < policy.min_samples_for(task):
            if task in policy.required_tasks:
                raise UsageError(f"required task {task} has {len(keys)} shared documents, the policy needs at least "
                                 f"{policy.min_samples_for(task)}")
            skipped.append(f"{task}: {len(keys)} shared documents, fewer than {policy.min_samples_for(task)}")
            continue
        rows = [baseline.values[task][k] for k in keys]
        names = sorted({m for r in rows for m in r})
        wanted = policy.gated_metrics(task)
        for metric in wanted or names:
            series = _per_sample(rows, metric)
            if series is None:
                if wanted is None:
                    continue  # not a per-sample number (a list, a text): not gated by default
                raise UsageError(f"--sequential: metric {metric} of task {task} has no per-sample value in baseline "
                                 f"run {baseline.run_id}")
            values = np.asarray(series)
            if (np.any(values < 0) or np.any(values > 1)) and wanted is None:
                skipped.append(f"{task}: {metric} takes values outside [0, 1], not gated sequentially")
                continue
            if np.any(values < 0) or np.any(values > 1):
                raise UsageError(f"--sequential: metric {metric} of task {task} takes values outside [0, 1]; the "
                                 "sequential gate needs a bounded per-sample metric")
            binary = bool(np.all((values == 0) | (values == 1)))
            tracks.append(MetricTrack(task, metric, 1.0, policy.tolerance(task, metric) / 100.0, len(keys), binary))
    if not tracks:
        raise UsageError("nothing to gate sequentially: " + ("; ".join(skipped) or "no per-sample metrics"))
    return tracks, skipped


def _order(keys: list[tuple[str, str]], seed: int, task: str) -> list[tuple[str, str]]:
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    return [keys[i] for i in rng.permutation(len(keys))]


def _diffs(store: Store, run_id: str, task: str, doc_ids: list[int], baseline_rows: list[dict],
           tracks: list[MetricTrack]) -> dict[str, np.ndarray]:
    found = dict(store.con.execute(
        "SELECT doc_id, metrics::VARCHAR FROM samples WHERE run_id = ? AND task = ? AND list_contains(?, doc_id)",
        [run_id, task, doc_ids]).fetchall())
    out = {}
    for t in tracks:
        sign = 1.0 if higher_is_better(task, t.metric) else -1.0
        cand = [json.loads(found[d]).get(t.metric) for d in doc_ids]
        if any(not isinstance(c, (int, float)) for c in cand):
            raise RuntimeError(f"candidate produced no {t.metric} for some documents of {task}")
        out[t.metric] = sign * (np.asarray(cand, dtype=float) - np.asarray([b[t.metric] for b in baseline_rows]))
    return out


def run_sequential_gate(store_path: Path, baseline_ref: str, candidate: Candidate, policy: Policy,
                        seed: int | None = None) -> SequentialGateResult:
    store = Store(store_path, read_only=True)
    try:
        baseline = load_baseline(store, baseline_ref)
    finally:
        store.close()
    gate_seed = baseline.seed if seed is None else seed
    config = RunConfig(tasks=candidate.tasks or baseline.tasks, model=candidate.model, model_args=candidate.model_args,
                       batch_size=candidate.batch_size, seed=baseline.seed, tags=candidate.tags,
                       show_progress=candidate.show_progress, sandbox=candidate.sandbox,
                       allow_unsandboxed_code=candidate.allow_unsandboxed_code)
    run = IncrementalRun(config, purpose="sequential gate")  # every input check: before anything is written
    try:
        items: dict[str, dict[tuple[str, str], Item]] = {}
        for p in run.prepared:
            items[p.task.name] = {}
            for inst in p.instances:
                items[p.task.name].setdefault(baseline.key(inst.doc, inst.prompt), Item(p, inst))
        shared = {task: sorted(k for k in by_key if k in baseline.values.get(task, {})) for task, by_key in items.items()}
        shared = {task: keys for task, keys in shared.items() if keys}
        if not shared:
            raise UsageError(f"baseline run {baseline.run_id} and the candidate's tasks have no documents in common "
                             "(same task, document and prompt: check the tasks, --num-fewshot and the data source)")
        tracks, skipped = _tracks(baseline, shared, policy)
        rule = policy.sequential
        test = SequentialTest(tracks, policy.alpha, rule.alpha_split, rule.min_docs)
        order = {task: _order(keys, gate_seed, task) for task, keys in shared.items() if any(t.task == task for t in tracks)}
        limit = {task: len(keys) if rule.max_docs is None else min(rule.max_docs, len(keys)) for task, keys in order.items()}
        done = dict.fromkeys(order, 0)
        gate_id = gate_store.new_gate_id()
        started = time.perf_counter()
        run.open(store_path)
        assert run.store is not None
        while True:
            batch: dict[str, list[tuple[str, str]]] = {}
            for task in test.open_tasks():
                if done[task] < limit[task]:
                    take = min(limit[task] - done[task], next_chunk(done[task], rule.chunk))
                    batch[task] = order[task][done[task]:done[task] + take]
            if not batch:
                break
            run.evaluate([items[task][k] for task, keys in batch.items() for k in keys])
            for task, keys in batch.items():
                done[task] += len(keys)
                task_tracks = [t for t in tracks if t.task == task and t.decision is None]
                doc_ids = [items[task][k].instance.doc_id for k in keys]
                diffs = _diffs(run.store, run.run_id, task, doc_ids, [baseline.values[task][k] for k in keys], task_tracks)
                for t in task_tracks:
                    t.add(diffs[t.metric])
            test.look()
        test.finish()
        wall = time.perf_counter() - started
        partial = run.evaluated < sum(len(p.instances) for p in run.prepared)
        run.finish(partial, {"sequential_gate": {"gate_id": gate_id, "baseline": baseline.run_id, "seed": gate_seed,
                                                 "docs_used": done}})
        result = SequentialGateResult(gate_id, baseline, run.run_id, run.backend.spec.text, gate_seed, policy, test,
                                      skipped, wall, partial)
        gate_store.save_gate(run.store, gate_id, baseline.run_id, run.run_id, gate_seed, result.passed,
                             policy.model_dump(), summary(result), trace_rows(test))
        gate_store.record_gate(run.store, gate_id, "sequential", baseline.run_id, run.run_id, result.passed,
                               policy.model_dump(), decision_rows(test))
        return result
    except BaseException:
        run.fail()
        raise
    finally:
        run.close()


def summary(result: SequentialGateResult) -> dict:
    used, available = result.docs()
    test = result.test
    metrics = []
    for t in test.tracks:
        e_pass, e_fail = t.e_values()
        low, high = t.interval(test.alpha_seq)
        metrics.append({"task": t.task, "metric": t.metric, "decision": t.decision, "docs_used": t.n,
                        "docs_available": t.available, "estimate": t.estimate(), "ci_low": low, "ci_high": high,
                        "e_pass": e_pass, "e_fail": e_fail, "tolerance": t.tolerance, "binary": t.binary,
                        "p_fallback": t.p_fallback, "p_fallback_adjusted": t.p_fallback_adjusted})
    return {"metrics": metrics, "docs_used": used, "docs_available": available, "wall_seconds": result.wall_seconds,
            "alpha": test.alpha, "alpha_seq": test.alpha_seq, "alpha_fallback": test.alpha_fallback,
            "looks": test.looks, "baseline_model": result.baseline.model, "candidate_model": result.candidate_model,
            "partial": result.partial, "skipped": result.skipped}


def trace_rows(test: SequentialTest) -> list[tuple]:
    return [(p.task, p.metric, p.look, p.docs_used, p.docs_available, p.e_pass, p.e_fail, p.estimate, p.ci_low,
             p.ci_high, p.decision) for p in test.trace]


def decision_rows(test: SequentialTest) -> list[dict]:
    """The per-metric decisions as harness.store.gates keeps every gate's (means are over the documents used)."""
    rows = []
    for t in test.tracks:
        low, high = t.interval(test.alpha_seq)
        e_pass, e_fail = t.e_values()
        rows.append({"task": t.task, "metric": t.metric, "status": t.decision, "baseline": None, "candidate": None,
                     "delta": t.estimate(), "ci_low": low, "ci_high": high,
                     "p_value": t.p_fallback if t.p_fallback is not None else min(1.0, 1 / e_fail),
                     "p_adjusted": t.p_fallback_adjusted, "n": t.n, "tolerance": 100 * t.tolerance,
                     "reason": f"{t.decision} after {t.n} of {t.available} documents"})
    return rows