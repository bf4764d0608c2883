"""The `harness` command. Exit codes: 0 done, 1 gate failed, 2 usage or input error, 3 internal error."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from harness.errors import UsageError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Evaluate language models; keep every number in DuckDB.")
log = logging.getLogger("harness")

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $HARNESS_DB or results/harness.duckdb)")


def _db(path: Optional[Path]) -> Path:
    from harness.store import default_db_path

    return path or default_db_path()


def _selections(tasks: Optional[str], suite: Optional[str], limit: Optional[int], num_fewshot: Optional[int]):
    from harness.evaluator import TaskSelection
    from harness.suites import load_suite

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
    from harness.judge_stage import JudgeConfig

    if spec is None:
        if args is not None or repeats != 1 or mode != "single" or baseline is not None:
            raise UsageError("--judge-args, --judge-repeats, --judge-mode and --baseline-answers need --judge SPEC")
        return None
    return JudgeConfig(spec=spec, args=args, repeats=repeats, mode=mode, baseline_answers=baseline)


def _json_summary(result, path: Path) -> None:
    tasks: dict[str, dict] = {}
    for row in result.metrics:
        tasks.setdefault(row.task, {})[row.metric] = {"value": row.value, "stderr": row.stderr, "n": row.n}
    path.write_text(json.dumps({"run_id": result.run_id, "model": result.model, "tasks": tasks}, indent=2))


@app.command()
def run(
    model: Optional[str] = typer.Option(None, "--model", help="hf:PATH_OR_ID (default: the embedded SmolLM2-135M-Instruct)"),
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
) -> None:
    """Evaluate a model on tasks or a suite and store the run."""
    from harness.evaluator import DEFAULT_MODEL, RunConfig, evaluate
    from harness.store import Store
    from harness.tables import metrics_table, print_table

    suite_name, selections = _selections(tasks, suite, limit, num_fewshot)
    if json_path is not None and not json_path.parent.is_dir():
        raise UsageError(f"--json: directory {json_path.parent} does not exist")
    config = RunConfig(tasks=selections, model=model or DEFAULT_MODEL, model_args=model_args, batch_size=batch_size,
                       seed=seed, tags=tag, suite=suite_name, show_progress=not no_progress,
                       sandbox=sandbox, allow_unsandboxed_code=allow_unsandboxed_code,
                       judge=_judge_config(judge, judge_args, judge_repeats, judge_mode, baseline_answers))
    result = evaluate(config, _db(db))
    store = Store(_db(db), read_only=True)
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
               f"{s.cached} from cache, {s.computed} computed; stored in {_db(db)}")
    if json_path is not None:
        _json_summary(result, json_path)


@app.command("tasks")
def tasks_cmd() -> None:
    """List registered tasks and groups."""
    from harness import registry

    for name in registry.group_names():
        typer.echo(f"{name}\t(group of {len(registry.expand([name]))} tasks)")
    for name in registry.task_names():
        task = registry.get_task(name)
        typer.echo(f"{name}\tv{task.version}\t{task.default_fewshot}-shot\t{','.join(task.request_kinds)}")


@app.command()
def suites() -> None:
    """List the suites in suites/."""
    from harness.suites import load_suite, suite_names

    for name in suite_names():
        _, suite = load_suite(name)
        typer.echo(f"{name}\t{suite.description}")


@app.command()
def runs(
    tag: Optional[str] = typer.Option(None, "--tag"),
    model: Optional[str] = typer.Option(None, "--model"),
    task: Optional[str] = typer.Option(None, "--task"),
    db: Optional[Path] = DbOption,
) -> None:
    """List stored runs."""
    from harness.store import Store
    from harness.tables import print_table, runs_table

    store = Store(_db(db), read_only=True)
    try:
        print_table(runs_table(store.runs(tag=tag, model=model, task=task)))
    finally:
        store.close()


@app.command()
def show(run_ref: str = typer.Argument(..., metavar="RUN"), db: Optional[Path] = DbOption) -> None:
    """Show a run: configuration, reproducibility metadata and metrics."""
    from harness.store import Store
    from harness.tables import metrics_table, print_table

    store = Store(_db(db), read_only=True)
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
                       f"dataset {r.dataset_fingerprint[:12]}, prompts {r.prompts_hash[:12]}")
        print_table(metrics_table(store.metrics(run_id), task_info))
    finally:
        store.close()


# Command groups that live in their own modules register on `app` when imported here.
# One line per module; keep this list sorted.
COMMAND_MODULES: tuple[str, ...] = ("harness.cli_bench", "harness.cli_decisions", "harness.cli_rag", "harness.cli_report", "harness.cli_sandbox")


def _register_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)


def _setup_logging() -> None:
    level = logging.DEBUG if os.environ.get("HARNESS_DEBUG") else os.environ.get("HARNESS_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="harness: %(levelname)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _cli_exception_kind(exc: BaseException) -> str | None:
    """Typer vendors its own click, so its exceptions are recognised by name and shape."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "Exit" in names and hasattr(exc, "exit_code"):
        return "exit"
    if "Abort" in names:
        return "abort"
    if "ClickException" in names and hasattr(exc, "format_message"):
        return "usage"
    return None


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    try:
        _register_command_modules()
        result = app(args=argv, standalone_mode=False)
    except UsageError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback unless asked for
        kind = _cli_exception_kind(exc)
        if kind == "exit":
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if kind == "abort":
            print("harness: interrupted", file=sys.stderr)
            return 130
        if kind == "usage":
            message = exc.format_message()  # type: ignore[attr-defined]
            if message:  # empty when the help text was already shown (no arguments)
                print(f"harness: error: {message}", file=sys.stderr)
            return 2
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness: internal error: {type(exc).__name__}: {exc} (HARNESS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())
