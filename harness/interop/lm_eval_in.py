"""`harness import-lm-eval DIR`: lm-eval 0.4 results (and samples) become runs in the database.

One run per results file, tagged `lm-eval:<model folder>@<date>` and `lm-eval`. The run id is
derived from the files' bytes, so importing the same directory again changes nothing. Every file
is read and checked (lm_eval_read) and every row built before the database is opened; one
results file's rows go in inside one transaction.

Per-sample rows keep lm-eval's own doc_hash, prompt_hash and target_hash, and the run's metadata
says `"hashes": "lm-eval"`. Harness's doc_hash is the sha256 of the canonical (sorted, compact)
JSON of its own processed document, lm-eval's the sha256 of `json.dumps(doc, indent=2)` of its
processed document (for HellaSwag it keeps the raw columns too), so the two are never equal; the
prompt hash is the same function of the same text in both tools (sha256 of the context of the
first request). decisions/pairing.py therefore pairs two lm-eval runs on lm-eval's doc and
prompt hashes, and an lm-eval run with a harness run on the prompt hash.

A results file whose tasks have no samples file beside it imports as metrics only (metadata
`"samples": false`): compare and gate refuse to pair such a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.core.hashing import sha256_file, sha256_json, sha256_text
from harness.core.redact import redact_args, strip_userinfo
from harness.interop.lm_eval_format import STDERR, is_number, our_metric, split_key
from harness.interop.lm_eval_read import ResultsFile, find_results
from harness.scoring.stats import normal_interval
from harness.store.db import MetricRow, SampleRow, Store

SOURCE = "lm-eval"
_LOGLIKELIHOOD_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling")
_NOT_METRICS = ("alias", "name", "sample_len", "sample_count")
_MODEL_NAME_ARGS = ("pretrained", "model", "path")  # the model's identity, kept in clear


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    tag: str
    created_at: datetime
    fields: dict
    task_rows: list[dict]
    samples: list[SampleRow]
    metrics: list[MetricRow]
    source: Path


def native_name(lm_name: str) -> str:
    """lm-eval's task name -> ours. Every task both tools have carries the same name today; an lm-eval task
    we do not have keeps its name."""
    return lm_name


def _created_at(result: ResultsFile) -> datetime:
    date = result.data.get("date")
    if is_number(date):
        return datetime.fromtimestamp(float(date), UTC).replace(tzinfo=None)
    try:
        day, _, clock = result.date_id.partition("T")
        return datetime.fromisoformat(f"{day}T{clock.replace('-', ':')}")
    except ValueError:
        return datetime.now(UTC).replace(tzinfo=None)


def _run_id(result: ResultsFile, created: datetime) -> str:
    parts = [sha256_file(result.path)] + [sha256_file(p) for _, p in sorted(result.sample_files.items())]
    return f"lmeval-{created:%Y%m%d-%H%M%S}-{sha256_text(''.join(parts))[:6]}"


def _model_args(config: dict) -> dict:
    args = config.get("model_args")
    if isinstance(args, str):  # older 0.4 releases kept the command line's string
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    if not isinstance(args, dict):
        return {}
    shown = redact_args(args)
    for key in _MODEL_NAME_ARGS:
        if isinstance(args.get(key), str):
            shown[key] = strip_userinfo(args[key])
    return shown


def _model_name(result: ResultsFile, args: dict) -> str:
    name = result.data.get("model_name")
    if isinstance(name, str) and name:
        return strip_userinfo(name)
    return next((str(args[k]) for k in _MODEL_NAME_ARGS if k in args), result.model_folder)


def _seed(config: dict) -> int | None:
    """lm-eval's few-shot seed: what harness's run seed decides (which shots a prompt shows)."""
    for key in ("fewshot_seed", "fewshot_random_seed", "random_seed"):
        if is_number(config.get(key)):
            return int(config[key])
    return None


def _floats(value: Any) -> Any:
    """lm-eval writes every response leaf as a string (sanitize_list): numbers and booleans back."""
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, str):
        if value in ("True", "False"):
            return value == "True"
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _prompt(row: dict) -> str:
    args = row.get("arguments")
    if isinstance(args, dict) and isinstance(args.get("gen_args_0"), dict):
        first = args["gen_args_0"].get("arg_0")
        return first if isinstance(first, str) else json.dumps(first)
    return ""


def _task_samples(task: str, rows: list[dict], output_type: str) -> list[SampleRow]:
    """One sample per document: lm-eval writes one line per (document, filter)."""
    by_doc: dict[int, list[dict]] = {}
    for row in rows:
        by_doc.setdefault(int(row["doc_id"]), []).append(row)
    scored = output_type in _LOGLIKELIHOOD_TYPES
    parse = _floats if scored else (lambda v: v)  # generations stay text ("36" is an answer, not a number)
    out = []
    for doc_id, lines in sorted(by_doc.items()):
        first = lines[0]
        metrics: dict[str, float] = {}
        extracted: dict[str, Any] = {}
        for line in lines:
            filt = str(line["filter"])
            for name in line["metrics"]:
                if is_number(line.get(name)):
                    metrics[our_metric(str(name), filt)] = float(line[name])
            filtered = parse(line.get("filtered_resps"))
            extracted[filt] = filtered[0] if isinstance(filtered, list) and len(filtered) == 1 else filtered
        resps = parse(first["resps"])
        lls = None
        if scored and isinstance(resps, list):
            lls = [float(r[0][0]) for r in resps if isinstance(r, list) and r and isinstance(r[0], list) and is_number(r[0][0])]
        out.append(SampleRow(
            task=task, doc_id=doc_id, doc_hash=str(first["doc_hash"]), prompt_hash=str(first["prompt_hash"]),
            target_hash=str(first["target_hash"]), prompt=_prompt(first), target=str(first["target"]), response=resps,
            extracted=None if lls is not None else json.dumps(extracted, ensure_ascii=False), metrics=metrics,
            loglikelihoods=lls))
    return out


def _binary(samples: list[SampleRow], name: str) -> bool:
    values = [s.metrics[name] for s in samples if name in s.metrics]
    return bool(values) and all(v in (0.0, 1.0) for v in values)


def _metric_rows(task: str, values: dict, n: int, samples: list[SampleRow]) -> list[MetricRow]:
    out = []
    for key, value in values.items():
        metric, filt = split_key(key)
        if key in _NOT_METRICS or metric.endswith(STDERR) or not is_number(value):
            continue
        stderr = values.get(f"{metric}{STDERR},{filt}")
        stderr = float(stderr) if is_number(stderr) else None
        name = our_metric(metric, filt)
        bounded = _binary(samples, name) if samples else 0.0 <= float(value) <= 1.0
        low, high = normal_interval(float(value), stderr, bounded)
        out.append(MetricRow(task, name, float(value), stderr, low, high, n))
    return out


def _n_docs(data: dict, task: str, samples: dict[str, list[SampleRow]]) -> int:
    counts = data.get("n-samples", {}).get(task)
    if isinstance(counts, dict) and is_number(counts.get("effective")):
        return int(counts["effective"])
    if task in samples:
        return len(samples[task])
    members = data.get("group_subtasks", {}).get(task) or []
    return sum(_n_docs(data, m, samples) for m in members if m != task)


def _data_source(config: Any) -> str | None:
    if not isinstance(config, dict) or not config.get("dataset_path"):
        return None
    name = config.get("dataset_name")
    return f"{SOURCE}:{config['dataset_path']}{'/' + str(name) if name else ''}"


def _task_row(data: dict, task: str, samples: list[SampleRow]) -> dict:
    """run_tasks' row. The fingerprints are lm-eval's own kind (task_hashes: sha256 of every sample's three hashes),
    never equal to a harness run's; compare only reports them differing between two lm-eval runs."""
    shots = data["n-shot"].get(task)
    fingerprint = data.get("task_hashes", {}).get(task) or sha256_text(
        "".join(s.doc_hash + s.prompt_hash + s.target_hash for s in samples) or json.dumps(data["configs"].get(task), default=str))
    return {"task": native_name(task), "version": str(data["versions"][task]) if task in data["versions"] else None,
            "num_fewshot": int(shots) if is_number(shots) else None, "source": _data_source(data["configs"].get(task)),
            "fingerprint": fingerprint, "n_docs": len(samples) or _n_docs(data, task, {}),
            "prompts_hash": sha256_text("".join(s.prompt_hash for s in samples)) if samples else None}


def plan(result: ResultsFile) -> PlannedRun:
    """Every row of one results file, built without touching a database."""
    data, config = result.data, result.data["config"]
    created = _created_at(result)
    args = _model_args(config)
    model = _model_name(result, args)
    groups = data.get("groups") if isinstance(data.get("groups"), dict) else {}
    tasks = [t for t in data["results"] if t not in groups]
    samples: dict[str, list[SampleRow]] = {}
    for task, rows in result.samples.items():
        output_type = str(data["configs"].get(task, {}).get("output_type", ""))
        samples[task] = _task_samples(native_name(task), rows, output_type)
    metrics = []
    for task, values in {**data["results"], **groups}.items():
        metrics.extend(_metric_rows(native_name(task), values, _n_docs(data, task, samples), samples.get(task, [])))
    task_rows = [_task_row(data, t, samples.get(t, [])) for t in tasks]
    backend = f"{SOURCE}/{config.get('model', 'unknown')}"
    keep = ("lm_eval_version", "git_hash", "date", "model_source", "model_name_sanitized", "transformers_version",
            "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks", "task_hashes", "configs",
            "total_evaluation_time_seconds")
    lm_eval = {k: data[k] for k in keep if k in data}
    lm_eval["config"] = {k: v for k, v in config.items() if k != "model_args"} | {"model_args": args}
    lm_eval["files"] = [result.path.name] + [p.name for _, p in sorted(result.sample_files.items())]
    metadata = {"source": SOURCE, "hashes": SOURCE, "samples": bool(samples), "lm_eval": lm_eval,
                "tasks": {native_name(t): {"lm_eval_name": t} for t in tasks}}
    limit = config.get("limit")
    fields = {"model": model, "model_fingerprint": sha256_json({"lm-eval": config.get("model"), "name": model,
                                                                  "sha": config.get("model_sha"),
                                                                  "dtype": config.get("model_dtype")}),
              "backend": backend, "backend_args": args, "tasks": [native_name(t) for t in tasks],
              "limit": int(limit) if is_number(limit) else None,
              "seed": _seed(config), "metadata": metadata}
    run_id = _run_id(result, created)
    tag = f"{SOURCE}:{result.model_folder}@{result.date_id.split('.')[0]}"
    return PlannedRun(run_id, tag, created, fields, task_rows, [s for rows in samples.values() for s in rows], metrics,
                      result.path)


def _insert(store: Store, run: PlannedRun) -> None:
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        store.create_run(run.run_id, sha256_text(run.run_id), run.fields, [run.tag, SOURCE])
        for row in run.task_rows:
            store.record_task(run.run_id, row)
        store.insert_samples(run.run_id, run.samples)
        store.write_metrics(run.run_id, run.metrics)
        con.execute("UPDATE runs SET status = 'complete', created_at = ?, finished_at = ? WHERE run_id = ?",
                    [run.created_at, run.created_at, run.run_id])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@dataclass(frozen=True)
class Imported:
    run_id: str
    tag: str
    source: Path
    tasks: int
    samples: int
    new: bool


def import_dir(db: Path, root: Path) -> list[Imported]:
    """Read and check everything under `root`, then store each results file's run that is not stored yet."""
    planned = [plan(r) for r in find_results(root)]
    store = Store(db)
    try:
        out = []
        for run in planned:
            exists = store.con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run.run_id]).fetchone() is not None
            if not exists:
                _insert(store, run)
            out.append(Imported(run.run_id, run.tag, run.source, len(run.task_rows), len(run.samples), not exists))
        return out
    finally:
        store.close()

