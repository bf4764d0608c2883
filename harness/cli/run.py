"""`harness run`, `tasks`, `suites`, `runs` and `show`: evaluate, and look at what is registered and stored."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import (
    DbOption,
    IncludePathOption,
    MlflowExperimentOption,
    MlflowOption,
    MlflowRequiredOption,
    MlflowUriOption,
    check_output_dir,
    check_output_file,
    db_path,
    include_yaml_tasks,
    mlflow_target,
    publish_to_mlflow,
)
from harness.core.config import DEFAULT_BOOTSTRAP_ITERS
from harness.core.errors import UsageError

commands = typer.Typer()


def task_selections(tasks: Optional[str], suite: Optional[str], limit: Optional[int], num_fewshot: Optional[int]):
    from harness.core.config import TaskSelection
    from harness.run.suite import load_suite

    if bool(tasks) == bool(suite):
        raise UsageError("give exactly one of --tasks a,b or --suite NAME")
    if suite:
        name, parsed = load_suite(suite)
        selections = parsed.selections()
    else:
        name = None
        selections = [TaskSelection(t.strip()) for t in tasks.split(",") if t.strip()]  # type: ignore[union-attr]
        if not selections:
            raise UsageError("--tasks is empty")
    if limit is not None or num_fewshot is not None:
        selections = [TaskSelection(s.name, num_fewshot if num_fewshot is not None else s.num_fewshot,
                                    limit if limit is not None else s.limit, s.data) for s in selections]
    return name, selections


def _judge_config(spec: Optional[str], args: Optional[str], repeats: int, mode: str, baseline: Optional[Path]):
    from harness.core.config import JudgeConfig

    if spec is None:
        if args is not None or repeats != 1 or mode != "single" or baseline is not None:
            raise UsageError("--judge-args, --judge-repeats, --judge-mode and --baseline-answers need --judge SPEC")
        return None
    return JudgeConfig(spec=spec, args=args, repeats=repeats, mode=mode, baseline_answers=baseline)


def _summary(result) -> dict:
    from harness.report.run_summary import summary

    return summary(result.run_id, result.model, result.metrics)


def _json_summary(result, path: Path) -> None:
    path.write_text(json.dumps(_summary(result), indent=2))


@commands.command()
def run(
    model: list[str] = typer.Option([], "--model", help="hf:PATH_OR_ID (default: the embedded SmolLM2-135M-Instruct); "
                                    "repeat it for one run per model"),
    model_args: Optional[str] = typer.Option(None, "--model-args", help="key=value,... for the backend"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated task or group names"),
    suite: Optional[str] = typer.Option(None, "--suite", help="suite name (suites/NAME.yaml) or path"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="documents per task"),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", min=0),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="integer or auto"),
    seed: int = typer.Option(1234, "--seed"),
    tag: list[str] = typer.Option([], "--tag", help="tag the run (repeatable)"),
    db: Optional[Path] = DbOption,
    json_path: Optional[Path] = typer.Option(None, "--json", help="write {run_id, model, tasks: {task: {metric: {value, stderr, n}}}}"),
    no_progress: bool = typer.Option(False, "--no-progress"),
    sandbox: str = typer.Option("auto", "--sandbox", help="where code tasks execute: auto|docker|bwrap|local"),
    allow_unsandboxed_code: bool = typer.Option(False, "--allow-unsandboxed-code",
                                                help="allow --sandbox local (model code runs on this machine)"),
    judge: Optional[str] = typer.Option(None, "--judge", help="judge of judged tasks (mt_bench): any model spec, "
                                        "e.g. openai:gpt-4o@https://api.openai.com/v1"),
    judge_args: Optional[str] = typer.Option(None, "--judge-args", help="temperature=,max_tokens=,seed=,retries= "
                                             "for the judge; other key=value pairs go to its backend"),
    judge_repeats: int = typer.Option(1, "--judge-repeats", min=1, help="ask each judgment N times and report the "
                                      "judge's variance (needs temperature > 0 or a seed in --judge-args)"),
    judge_mode: str = typer.Option("single", "--judge-mode", help="single (a 1-10 rating) | pairwise (against --baseline-answers)"),
    baseline_answers: Optional[Path] = typer.Option(None, "--baseline-answers",
                                                    help="pairwise baseline: a FastChat model_answer .jsonl file"),
    executor: str = typer.Option("local", "--executor", help="local (this process) | ray (model replicas on Ray workers)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="--executor ray: model replicas per model (default 1)"),
    worker_cpus: Optional[float] = typer.Option(None, "--worker-cpus", min=0.01, help="CPUs (torch threads) per replica (default 1)"),
    worker_gpus: Optional[float] = typer.Option(None, "--worker-gpus", min=0, help="GPUs per replica (default 0)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="HOST:PORT or ray://HOST:10001 "
                                              "(default: a fresh local cluster, never RAY_ADDRESS)"),
    mlflow: bool = MlflowOption,
    mlflow_uri: Optional[str] = MlflowUriOption,
    mlflow_required: bool = MlflowRequiredOption,
    mlflow_experiment: Optional[str] = MlflowExperimentOption,
    include_path: list[Path] = IncludePathOption,
    bootstrap_iters: int = typer.Option(DEFAULT_BOOTSTRAP_ITERS, "--bootstrap-iters", "--bootstrap_iters", min=0,
                                        help="resamples for the stderr of a corpus metric (perplexity, f1, mcc, bleu...), "
                                             "as lm-eval's; 0: none"),
    output_path: Optional[Path] = typer.Option(None, "--output-path", "--output_path",
                                               help="also write lm-eval's files: DIR/MODEL/results_DATE.json and "
                                                    "samples_TASK_DATE.jsonl"),
) -> None:
    """Evaluate a model (or several: one run each) on tasks or a suite and store the run."""
    from harness.core.config import DEFAULT_MODEL, RunConfig
    from harness.run.parallel import evaluate_models

    include_yaml_tasks(include_path)
    suite_name, selections = task_selections(tasks, suite, limit, num_fewshot)
    check_output_file(json_path, "--json")
    if output_path is not None:
        check_output_dir(output_path, "--output-path")
    ray = ray_options(executor, workers, worker_cpus, worker_gpus, ray_address)
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_required, mlflow_experiment)
    models = model or [DEFAULT_MODEL]
    if len(set(models)) != len(models):
        raise UsageError("the same --model is given twice")
    configs = [RunConfig(tasks=selections, model=m, model_args=model_args, batch_size=batch_size,
                         seed=seed, tags=tag, suite=suite_name, show_progress=not no_progress and len(models) == 1,
                         sandbox=sandbox, allow_unsandboxed_code=allow_unsandboxed_code,
                         judge=_judge_config(judge, judge_args, judge_repeats, judge_mode, baseline_answers), ray=ray,
                         bootstrap_iters=bootstrap_iters)
               for m in models]
    outcomes = evaluate_models(configs, db_path(db))
    for outcome in outcomes:
        if outcome.result is not None:
            _print_result(outcome.result, db)
    if json_path is not None:
        done = [o.result for o in outcomes if o.result is not None]
        if len(models) == 1 and done:
            _json_summary(done[0], json_path)
        elif len(models) > 1:
            json_path.write_text(json.dumps([_summary(r) for r in done], indent=2))
    if output_path is not None:
        _write_lm_eval(output_path, [o.result.run_id for o in outcomes if o.result is not None], db)
    if tracking is not None:  # after the runs are stored: MLflow gets what the database holds
        from harness.report.mlflow_tracking import log_run

        for stored in (o.result for o in outcomes if o.result is not None):
            publish_to_mlflow(tracking, f"run {stored.run_id}", partial(log_run, tracking, db_path(db), stored.run_id))
    failed = [o for o in outcomes if o.error is not None]
    if len(models) == 1 and failed:
        raise failed[0].error  # type: ignore[misc]
    if failed:  # one line per model that failed; the exit code is the worst (a bug, 3, over bad input, 2)
        for o in failed:
            kind = "error" if isinstance(o.error, UsageError) else f"internal error: {type(o.error).__name__}"
            typer.echo(f"harness: {o.model}: {kind}: {str(o.error).strip().splitlines()[0] if str(o.error).strip() else ''}",
                       err=True)
        raise typer.Exit(max(2 if isinstance(o.error, UsageError) else 3 for o in failed))


def _write_lm_eval(out_dir: Path, run_ids: list[str], db: Optional[Path]) -> None:
    from harness.interop.lm_eval_out import write_run
    from harness.store.db import Store

    store = Store(db_path(db), read_only=True)
    try:
        for run_id in run_ids:
            paths = write_run(store, run_id, out_dir)
            typer.echo(f"run {run_id}: lm-eval files in {paths[0].parent} ({len(paths) - 1} samples files)")
    finally:
        store.close()


def ray_options(executor: str, workers: Optional[int], cpus: Optional[float], gpus: Optional[float],
                address: Optional[str]):
    from harness.core.config import RayOptions

    if executor not in ("local", "ray"):
        raise UsageError(f"--executor {executor!r}: expected local or ray")
    given = {"--workers": workers, "--worker-cpus": cpus, "--worker-gpus": gpus, "--ray-address": address}
    if executor == "local":
        used = [k for k, v in given.items() if v is not None]
        if used:
            raise UsageError(f"{', '.join(used)} need --executor ray")
        return None
    from harness.run.ray_cluster import check_installed

    check_installed()
    return RayOptions(address=address, workers=workers or 1, worker_cpus=cpus if cpus is not None else 1.0,
                      worker_gpus=gpus or 0.0)


def _print_result(result, db: Optional[Path]) -> None:
    from harness.cli.tables import metrics_table, print_table
    from harness.store.db import Store

    store = Store(db_path(db), read_only=True)
    try:
        info = store.run(result.run_id)
        task_info = {r.task: {"version": r.task_version, "num_fewshot": r.num_fewshot} for r in info["task_rows"].itertuples()}
        print_table(metrics_table(store.metrics(result.run_id), task_info, title=f"run {result.run_id} · {result.model}"))
        judge_info = json.loads(info["metadata"] or "{}").get("judge")
    finally:
        store.close()
    for group, how in result.groups.items():
        typer.echo(f"{group}: {how} (as lm-evaluation-harness 0.4)")
    if judge_info:
        j = judge_info["stats"]
        typer.echo(f"judge {judge_info['spec']} ({judge_info['mode']}): {j['requested']} judge requests, {j['cached']} from cache, "
                   f"{j['computed']} computed, {j['failed']} failed")
    s = result.stats
    typer.echo(f"run {result.run_id}{' (resumed)' if result.resumed else ''}: {s.unique} unique requests, "
               f"{s.cached} from cache, {s.computed} computed; stored in {db_path(db)}")


@commands.command("tasks")
def tasks_cmd(include_path: list[Path] = IncludePathOption) -> None:
    """List registered tasks and groups (and, with --include-path, the lm-eval YAMLs refused, with why)."""
    from harness import tasks as catalog

    yaml_catalog = include_yaml_tasks(include_path)

    for name in catalog.group_names():
        typer.echo(f"{name}\t(group of {len(catalog.expand([name]))} tasks)")
    for name in catalog.tag_names():
        typer.echo(f"{name}\t(tag of {len(catalog.expand([name]))} tasks, no aggregate)")
    for name in catalog.task_names():
        task = catalog.get_task(name)
        typer.echo(f"{name}\tv{task.version}\t{task.default_fewshot}-shot\t{','.join(task.request_kinds)}")
    if yaml_catalog is not None:
        for refusal in yaml_catalog.refused:
            typer.echo(f"refused\t{refusal.name or '-'}\t{refusal.message}")
        typer.echo(f"lm-eval YAML: {len(yaml_catalog.tasks)} tasks loaded, {len(yaml_catalog.refused)} refused, "
                   f"{len(yaml_catalog.skipped)} files skipped (include-only or duplicate)")


@commands.command()
def suites() -> None:
    """List the suites in suites/."""
    from harness.run.suite import load_suite, suite_names

    for name in suite_names():
        _, suite = load_suite(name)
        typer.echo(f"{name}\t{suite.description}")


@commands.command()
def runs(
    tag: Optional[str] = typer.Option(None, "--tag"),
    model: Optional[str] = typer.Option(None, "--model"),
    task: Optional[str] = typer.Option(None, "--task"),
    db: Optional[Path] = DbOption,
) -> None:
    """List stored runs."""
    from harness.cli.tables import print_table, runs_table
    from harness.store.db import Store

    store = Store(db_path(db), read_only=True)
    try:
        print_table(runs_table(store.runs(tag=tag, model=model, task=task)))
    finally:
        store.close()


@commands.command()
def show(run_ref: str = typer.Argument(..., metavar="RUN"), db: Optional[Path] = DbOption) -> None:
    """Show a run: configuration, reproducibility metadata and metrics."""
    from harness.cli.tables import metrics_table, print_table
    from harness.store.db import Store

    store = Store(db_path(db), read_only=True)
    try:
        run_id = store.resolve_run(run_ref)
        info = store.run(run_id)
        meta = json.loads(info["metadata"] or "{}")
        typer.echo(f"run {run_id}  status={info['status']}  model={info['model']}  fingerprint={info['model_fingerprint'][:16]}")
        typer.echo(f"created {info['created_at']}  finished {info['finished_at']}  tags={','.join(info['tags']) or '-'}  suite={info['suite'] or '-'}")
        for key in ("harness_version", "git", "python", "libraries", "hardware", "backend", "judge"):
            if key in meta:
                typer.echo(f"{key}: {json.dumps(meta[key], default=str)}")
        task_info = {r.task: {"version": r.task_version, "num_fewshot": r.num_fewshot} for r in info["task_rows"].itertuples()}
        for r in info["task_rows"].itertuples():
            typer.echo(f"task {r.task}: v{r.task_version}, {r.num_fewshot}-shot, {r.n_docs} docs, source {r.data_source}, "
                       f"dataset {(r.dataset_fingerprint or '-')[:12]}, prompts {(r.prompts_hash or '-')[:12]}")
        print_table(metrics_table(store.metrics(run_id), task_info))
    finally:
        store.close()
