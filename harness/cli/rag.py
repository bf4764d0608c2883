"""`harness rag-eval`: score a RAG system's outputs (retrieval and judged generation metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import DbOption, check_output_file, db_path

commands = typer.Typer()


def _clean(value: object) -> object:
    """JSON-ready: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_json(result, judge_spec: str | None) -> dict:
    metrics = {r.metric: {"value": r.value, "stderr": r.stderr, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n}
               for r in result.metrics}
    judge = result.judge.as_dict() if result.judge is not None else None
    return _clean({"run_id": result.run_id, "model": result.model, "tasks": {"rag": metrics},
                   "judge": None if judge is None else {"spec": judge_spec, **judge},
                   "samples": [{"doc_id": i, "metrics": m} for i, m in enumerate(result.per_sample)]})  # type: ignore[return-value]


@commands.command("rag-eval")
def rag_eval_cmd(
    data: Path = typer.Argument(..., metavar="DATA.jsonl", help="one JSON object per line (docs/rag.md)"),
    judge: Optional[str] = typer.Option(None, "--judge", help="judge model spec, e.g. openai:MODEL@http://HOST:PORT/v1"),
    judge_args: Optional[str] = typer.Option(None, "--judge-args", help="key=value,... for the judge backend"),
    embeddings: str = typer.Option("minilm", "--embeddings", help="minilm (the shipped all-MiniLM-L6-v2) or a sentence-transformers directory"),
    k: int = typer.Option(5, "--k", help="cutoff of Recall@k, Precision@k, hit rate@k and NDCG@k"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="retrieval, generation, or names: faithfulness,answer_relevancy,context_precision,context_recall (default: all)"),
    strictness: int = typer.Option(3, "--strictness", help="questions generated per answer for answer_relevancy (ragas default 3)"),
    name: Optional[str] = typer.Option(None, "--name", help="name of the evaluated system (default: the data file's stem); the run's model is rag:NAME"),
    tag: list[str] = typer.Option([], "--tag", help="tag the run (repeatable)"),
    db: Optional[Path] = DbOption,
    json_path: Optional[Path] = typer.Option(None, "--json", help="write {run_id, model, tasks: {rag: {metric: ...}}, judge: {...}, samples: [...]}"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Score a RAG system's outputs: retrieval metrics and ragas-defined judged metrics, stored as a run of task `rag`."""
    from harness.cli.tables import metrics_table, print_table
    from harness.run.rag_eval import VERSION, RagConfig, rag_eval, select_metrics
    from harness.store.db import Store

    check_output_file(json_path, "--json")
    config = RagConfig(data=data, judge=judge, judge_args=judge_args, embeddings=embeddings, k=k,
                       metrics=select_metrics(metrics), strictness=strictness, name=name, tags=tag,
                       show_progress=not no_progress)
    result = rag_eval(config, db_path(db))
    store = Store(db_path(db), read_only=True)
    try:
        print_table(metrics_table(store.metrics(result.run_id), {"rag": {"version": VERSION, "num_fewshot": 0}},
                                  title=f"run {result.run_id} · {result.model}"))
    finally:
        store.close()
    if result.judge is not None:
        stats = result.judge.as_dict()
        kinds = ", ".join(f"{kind} {n}" for kind, n in stats["invalid_by_kind"].items() if n) or "none"
        typer.echo(f"judge: {stats['requests']} requests ({stats['cached']} from cache), {stats['judgments']} judgments, "
                   f"{stats['invalid']} invalid ({kinds})")
        if stats["judgments"] and stats["invalid"] == stats["judgments"]:
            typer.echo("warning: every judgment was invalid; check the judge (--judge-args timeout=..., the model name)", err=True)
    typer.echo(f"run {result.run_id}{' (resumed)' if result.resumed else ''}: {len(result.per_sample)} samples; stored in {db_path(db)}")
    if json_path is not None:
        json_path.write_text(json.dumps(result_json(result, judge), indent=2))
