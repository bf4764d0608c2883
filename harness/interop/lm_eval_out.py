"""`harness run --output-path DIR`: a stored run written as lm-eval 0.4 writes `--output_path DIR --log_samples`.

DIR/<model>/results_<date_id>.json and samples_<task>_<date_id>.jsonl (lm_eval_format has the layout),
read from the database after the run is stored, so the files say what the database holds.
What lm-eval's readers use is there with lm-eval's types: `results` and `groups` keyed
"<metric>,<filter>" with "<metric>_stderr,<filter>" ("N/A" without one), `group_subtasks`, `configs`
(task, output_type, num_fewshot, metadata.version, the metric list), `versions`, `n-shot`,
`higher_is_better`, `n-samples`, `config` (model, redacted model_args, limit, seeds), `task_hashes`,
`model_name(_sanitized)`, `git_hash`, `date`. Harness writes no `lm_eval_version` (lm-eval did not
write these files) but `harness_version` and `harness_run_id`.

Samples lines are one per (document, filter), lm-eval's leaves as strings (its sanitize_list). The
document is reloaded from the task's dataset and written only when its hash equals the stored
one (else null); doc_hash is lm-eval's hash of that document, prompt_hash the stored one (both
tools hash the prompt text alike), target_hash lm-eval's of the stored target.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import tasks as catalog
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.interop.lm_eval_format import NO_FILTER, date_id, doc_hash, hash_string, lm_eval_key, sanitize_model_name, split_key
from harness.store.db import Store


def _docs(task: str) -> list[dict] | None:
    try:
        return catalog.get_task(task).load().docs
    except Exception:  # a task this installation cannot load now: the samples go without their documents
        return None


def _strings(value: Any) -> Any:
    """lm-eval's sanitize_list: lists kept, every leaf its str()."""
    if isinstance(value, (list, tuple)):
        return [_strings(v) for v in value]
    return str(value)


def _by_filter(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        metric, filt = split_key(name)
        out.setdefault(filt, {})[metric] = value
    return out


def _sample_lines(task: str, rows: list[tuple], lm_eval_hashes: bool) -> Iterator[dict]:
    """lm_eval_hashes: the run came from lm-eval, its stored doc_hash already is lm-eval's (and no document of ours
    has that hash)."""
    docs = None if lm_eval_hashes else _docs(task)
    for doc_id, stored_hash, prompt_hash, prompt, target, response, extracted, metrics, lls in rows:
        doc = docs[doc_id] if docs is not None and 0 <= doc_id < len(docs) else None
        if doc is not None and sha256_json(doc) != stored_hash:
            doc = None
        resp = json.loads(response) if response else []
        answers = json.loads(extracted) if lls is None and extracted else {}
        for filt, values in _by_filter(json.loads(metrics or "{}")).items():
            if lls is not None:  # one loglikelihood request per choice: [[logprob, is_greedy]] each
                resps = [[pair] for pair in resp]
                filtered = list(resp)
                arguments = {f"gen_args_{i}": {"arg_0": prompt} for i in range(len(resp))}
            else:
                resps = [resp if isinstance(resp, list) else [resp]]
                filtered = [answers.get(filt) if isinstance(answers, dict) and filt != NO_FILTER else (resp or [""])[0]]
                arguments = {"gen_args_0": {"arg_0": prompt}}
            yield {"doc_id": doc_id, "doc": doc, "target": target, "arguments": arguments,
                   "resps": _strings(resps), "filtered_resps": _strings(filtered), "filter": filt,
                   "metrics": sorted(values), "doc_hash": stored_hash if lm_eval_hashes else doc_hash(doc),
                   "prompt_hash": prompt_hash,
                   "target_hash": hash_string(str(target)), **values}


def _higher_is_better(task: str) -> dict[str, bool]:
    try:
        specs = catalog.get_task(task).metrics
    except Exception:
        return {}
    return {split_key(m.name)[0]: m.higher_is_better for m in specs}


def _results_block(metrics: list[tuple], n_by_task: dict[str, int]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for task, metric, value, stderr, _n in metrics:
        block = out.setdefault(task, {"alias": task, "name": task})
        if task in n_by_task:
            block["sample_len"] = n_by_task[task]
        block[lm_eval_key(metric)] = value
        block[lm_eval_key(metric, stderr=True)] = stderr if stderr is not None else "N/A"
    return out


def _model_name(model: str) -> str:
    backend, sep, rest = model.partition(":")
    return rest if sep and backend.isidentifier() else model


def write_run(store: Store, run_id: str, out_dir: Path, now: datetime | None = None) -> list[Path]:
    """Write the run's results and samples files; returns their paths."""
    info = store.run(run_id)
    meta = json.loads(info["metadata"] or "{}")
    task_rows = list(info["task_rows"].itertuples())
    tasks = [r.task for r in task_rows]
    metrics = store.con.execute("SELECT task, metric, value, stderr, n FROM metrics WHERE run_id = ? ORDER BY task, metric",
                                [run_id]).fetchall()
    groups = {g: list(catalog.get_group(g).tasks) for g in {m[0] for m in metrics} - set(tasks)  # type: ignore[union-attr]
              if catalog.get_group(g) is not None}
    samples: dict[str, list[tuple]] = {t: [] for t in tasks}
    for row in store.con.execute("""SELECT task, doc_id, doc_hash, prompt_hash, prompt, target, response::VARCHAR, extracted,
                                           metrics::VARCHAR, loglikelihoods FROM samples WHERE run_id = ? ORDER BY task, doc_id""",
                                 [run_id]).fetchall():
        samples.setdefault(row[0], []).append(row[1:])
    lm_eval_hashes = meta.get("hashes") == "lm-eval"  # decisions.pairing's mark (interop sits below decisions)
    lines = {t: list(_sample_lines(t, rows, lm_eval_hashes)) for t, rows in samples.items() if rows}
    n_by_task = {t: len(rows) for t, rows in samples.items()}
    results = _results_block(metrics, n_by_task)
    model_name = _model_name(str(info["model"]))
    stamp = date_id(now)
    folder = out_dir / sanitize_model_name(model_name)
    created, finished = info["created_at"], info["finished_at"]
    document = {
        "results": {t: results[t] for t in tasks + sorted(groups) if t in results},
        "groups": {g: results[g] for g in sorted(groups) if g in results},
        "group_subtasks": {g: [t for t in members if t in tasks] for g, members in groups.items()},
        "configs": {r.task: {"task": r.task, "output_type": "multiple_choice" if any(s[-1] is not None for s in samples.get(r.task, []))
                             else "generate_until", "num_fewshot": _py(r.num_fewshot),
                             "metadata": {"version": r.task_version, "harness_data_source": r.data_source,
                                          "harness_dataset_fingerprint": r.dataset_fingerprint}} for r in task_rows},
        "versions": {r.task: _version(r.task_version) for r in task_rows} | {g: "N/A" for g in groups},
        "n-shot": {r.task: _py(r.num_fewshot) for r in task_rows},
        "higher_is_better": {t: _higher_is_better(t) for t in tasks},
        "n-samples": {r.task: {"original": int(r.n_docs or 0), "effective": n_by_task.get(r.task, 0)} for r in task_rows},
        "config": {"model": str(info["backend"]), "model_args": json.loads(info["backend_args"] or "{}"),
                   "batch_size": meta.get("backend", {}).get("batch_size"),
                   "limit": _limit(info, meta),
                   "random_seed": _py(info["seed"]), "fewshot_seed": _py(info["seed"]), "bootstrap_iters": meta.get("bootstrap_iters", 0), "gen_kwargs": {}},
        "git_hash": (meta.get("git") or {}).get("sha", "")[:7] or None,
        "date": created.timestamp() if hasattr(created, "timestamp") else None,
        "task_hashes": {t: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in ls))
                        for t, ls in lines.items()},
        "model_source": str(info["backend"]),
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(model_name),
        "total_evaluation_time_seconds": str((finished - created).total_seconds()) if finished is not None else None,
        "harness_version": meta.get("harness_version"),
        "harness_run_id": run_id,
    }
    return _write(folder, stamp, document, lines)


def _py(value: Any) -> Any:
    """A value read back through pandas as plain JSON: numpy scalars as Python's, NaN/NA as None."""
    if value is None or (isinstance(value, float) and value != value) or str(value) in ("<NA>", "NaT"):
        return None
    return value.item() if hasattr(value, "item") else value


def _limit(info: dict, meta: dict) -> float | None:
    """lm-eval's one --limit: the run's, else the largest per-task limit (a suite may limit tasks apiece)."""
    if _py(info["limit_docs"]) is not None:
        return float(info["limit_docs"])
    limits = [t.get("limit") for t in (meta.get("tasks") or {}).values() if isinstance(t, dict)]
    numbers = [float(x) for x in limits if isinstance(x, (int, float))]
    return max(numbers) if numbers else None


def _version(value: object) -> object:
    try:
        return float(str(value))
    except ValueError:
        return value


def _write(folder: Path, stamp: str, document: dict, lines: dict[str, list[dict]]) -> list[Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / f"results_{stamp}.json"]
        written[0].write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        for task, rows in lines.items():
            path = folder / f"samples_{task}_{stamp}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            written.append(path)
    except OSError as exc:
        raise UsageError(f"cannot write lm-eval output to {folder}: {exc.strerror}") from None
    return written
