"""Commands that turn stored runs into decisions: compare, gate, tag, export, import."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import (
    DbOption,
    MlflowExperimentOption,
    MlflowOption,
    MlflowRequiredOption,
    MlflowUriOption,
    check_output_file,
    db_path,
    mlflow_target,
    publish_to_mlflow,
)
from harness.core.errors import UsageError

TOP_FLIPS = 10

commands = typer.Typer()


def _p(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3g}"


@commands.command()
def compare(
    run_a: str = typer.Argument(..., metavar="RUN_A"),
    run_b: str = typer.Argument(..., metavar="RUN_B"),
    html: Optional[Path] = typer.Option(None, "--html", help="write a comparison report (HTML)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON"),
    db: Optional[Path] = DbOption,
) -> None:
    """Paired comparison of RUN_B against RUN_A on the documents both ran."""
    from rich.table import Table

    from harness.cli.tables import print_table
    from harness.decisions.compare import compare_runs, comparison_to_dict
    from harness.store.db import Store

    check_output_file(html, "--html")
    check_output_file(json_path, "--json")
    store = Store(db_path(db), read_only=True)
    try:
        comparison = compare_runs(store, store.resolve_run(run_a), store.resolve_run(run_b))
    finally:
        store.close()
    table = Table(title=f"A {comparison.run_a} · {comparison.model_a}  vs  B {comparison.run_b} · {comparison.model_b}")
    for name in ("Task", "Metric", "A", "B", "Δ (B-A)", "95% CI", "p", "p_holm", "flips +/-", "n"):
        table.add_column(name, justify="left" if name in ("Task", "Metric") else "right")
    for m in comparison.metrics:
        table.add_row(m.task, m.metric, f"{m.value_a:.4f}", f"{m.value_b:.4f}", f"{m.delta:+.4f}",
                      f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}]", _p(m.p_value), _p(m.p_adjusted),
                      f"+{m.improved}/-{m.regressed}", str(m.n_paired))
    print_table(table)
    for shift in comparison.loglikelihood:
        biggest = max((abs(d) for d in shift.diffs), default=0.0)
        typer.echo(f"{shift.task}: chosen answer agrees on {shift.agreement:.1%} of {shift.n} documents; "
                   f"largest loglikelihood change {biggest:.4f}")
    for warning in comparison.warnings:
        typer.echo(f"warning: {warning}")
    if comparison.flips:
        typer.echo(f"flipped samples ({len(comparison.flips)}; first {min(TOP_FLIPS, len(comparison.flips))}):")
        for f in comparison.flips[:TOP_FLIPS]:
            excerpt = " ".join(f.prompt_excerpt.split())[-100:]
            typer.echo(f"  {f.task} #{f.doc_id} {f.metric} {f.value_a:g}->{f.value_b:g}: A={f.answer_a!r} "
                       f"B={f.answer_b!r} target={f.target!r} | {excerpt}")
    if json_path is not None:
        json_path.write_text(json.dumps(comparison_to_dict(comparison), indent=2))
    if html is not None:
        from harness.report.site import render_comparison

        render_comparison(comparison, html)
        typer.echo(f"report written to {html}")


@commands.command()
def gate(
    baseline: str = typer.Option(..., "--baseline", help="run id or tag (latest complete run with it)"),
    candidate: Optional[str] = typer.Option(None, "--candidate", help="stored run id or tag"),
    candidate_model: Optional[str] = typer.Option(None, "--candidate-model",
                                                  help="evaluate this model live on the baseline's documents (--sequential)"),
    candidate_model_args: Optional[str] = typer.Option(None, "--candidate-model-args", help="key=value,... for its backend"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="with --candidate-model: tasks (default: the baseline's)"),
    suite: Optional[str] = typer.Option(None, "--suite", help="with --candidate-model: a suite instead of --tasks"),
    sequential: bool = typer.Option(False, "--sequential", help="stop as soon as every gated metric is decided "
                                    "(anytime-valid tests; docs/sequential-gate.md)"),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", min=1, help="documents per task at most (policy: sequential.max_docs)"),
    chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="documents per task per look (default: adaptive)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the document order (default: the baseline run's seed)"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="integer or auto, for the candidate's backend"),
    no_progress: bool = typer.Option(False, "--no-progress"),
    policy_path: Optional[Path] = typer.Option(None, "--policy", help="policy YAML (default: suites/gate.yaml defaults)"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML, one test case per task"),
    markdown_path: Optional[Path] = typer.Option(None, "--markdown", help="write the summary here instead of stdout"),
    db: Optional[Path] = DbOption,
    mlflow: bool = MlflowOption,
    mlflow_uri: Optional[str] = MlflowUriOption,
    mlflow_required: bool = MlflowRequiredOption,
    mlflow_experiment: Optional[str] = MlflowExperimentOption,
) -> None:
    """Exit 0 if the candidate has no significant regression beyond tolerance, 1 if it has, 2 on unusable input."""
    from harness.decisions.gate import load_policy

    check_output_file(junit, "--junit")
    check_output_file(markdown_path, "--markdown")
    if (candidate is None) == (candidate_model is None):
        raise UsageError("give exactly one of --candidate RUN (a stored run) or --candidate-model SPEC (evaluated live)")
    live_only = {"--sequential": sequential, "--tasks": tasks, "--suite": suite, "--max-docs": max_docs, "--chunk": chunk,
                 "--seed": seed, "--candidate-model-args": candidate_model_args, "--batch-size": batch_size}
    if candidate is not None and any(v for v in live_only.values()):
        given = ", ".join(k for k, v in live_only.items() if v)
        raise UsageError(f"{given} need --candidate-model (the candidate evaluated live), not a stored --candidate")
    if candidate_model is not None and not sequential:
        raise UsageError("--candidate-model is evaluated by the sequential gate: add --sequential (or run the candidate "
                         "with `harness run` and gate it with --candidate RUN)")
    policy = load_policy(policy_path)
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_required, mlflow_experiment)
    if candidate_model is not None:
        summary, passed, fails, gate_id = _sequential_gate(baseline, candidate_model, candidate_model_args, tasks, suite, max_docs,
                                                  chunk, seed, batch_size, no_progress, policy, db, junit)
    else:
        summary, passed, fails, gate_id = _fixed_gate(baseline, str(candidate), policy, db, junit)
    if markdown_path is not None:
        markdown_path.write_text(summary)
    else:
        typer.echo(summary, nl=False)
    if tracking is not None:  # the stored verdict; a required logging failure (exit 2) outranks a failed gate (1)
        from harness.report.mlflow_models import log_gate

        publish_to_mlflow(tracking, f"gate {gate_id}", lambda: log_gate(tracking, db_path(db), gate_id, summary))
    if not passed:
        typer.echo(f"harness: gate failed: {fails} regression(s)", err=True)
        raise typer.Exit(1)


def _fixed_gate(baseline: str, candidate: str, policy, db: Optional[Path], junit: Optional[Path]) -> tuple[str, bool, int, str]:
    from harness.decisions.compare import compare_runs
    from harness.decisions.gate import decide, decision_rows, junit_xml, markdown
    from harness.store import gates
    from harness.store.db import Store

    store = Store(db_path(db), read_only=True)
    try:
        ids = []
        for label, ref in (("baseline", baseline), ("candidate", candidate)):
            run_id = store.resolve_run(ref)
            status = store.run(run_id)["status"]
            if status != "complete":
                raise UsageError(f"{label} run {run_id} is not complete (status {status})")
            ids.append(run_id)
        comparison = compare_runs(store, ids[0], ids[1], alpha=policy.alpha)
    finally:
        store.close()
    result = decide(comparison, policy)
    store = Store(db_path(db))  # the verdict is kept for `harness history` and the report's history page
    gate_id = gates.new_gate_id()
    try:
        gates.record_gate(store, gate_id, "fixed", ids[0], ids[1], result.passed, policy.model_dump(),
                          decision_rows(result))
    finally:
        store.close()
    if junit is not None:
        junit.write_text(junit_xml(result))
    return markdown(result), result.passed, len(result.regressions), gate_id


def _sequential_gate(baseline: str, model: str, model_args: Optional[str], tasks: Optional[str], suite: Optional[str],
                     max_docs: Optional[int], chunk: Optional[int], seed: Optional[int], batch_size: Optional[str],
                     no_progress: bool, policy, db: Optional[Path], junit: Optional[Path]) -> tuple[str, bool, int, str]:
    from harness.cli.run import task_selections
    from harness.decisions.live_gate import Candidate, run_sequential_gate
    from harness.decisions.sequential_output import junit_xml, markdown

    selections = task_selections(tasks, suite, None, None)[1] if (tasks or suite) else None
    rule = policy.sequential.model_copy(update={k: v for k, v in (("max_docs", max_docs), ("chunk", chunk)) if v is not None})
    policy = policy.model_copy(update={"sequential": rule})
    result = run_sequential_gate(db_path(db), baseline, Candidate(model, model_args, batch_size, selections,
                                                                  show_progress=not no_progress), policy, seed)
    if junit is not None:
        junit.write_text(junit_xml(result))
    fails = sum(t.decision in ("fail", "fail-fallback") for t in result.test.tracks)
    return markdown(result), result.passed, fails, result.gate_id


@commands.command()
def history(
    tag_name: str = typer.Option(..., "--tag", help="the runs with this tag, oldest first (e.g. main)"),
    metric: Optional[str] = typer.Option(None, "--metric", help="TASK/METRIC (default: every metric a gate judged)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the rows as JSON"),
    db: Optional[Path] = DbOption,
) -> None:
    """Each gated metric of a tag's runs over time, with its interval and the gate verdict of each run."""
    from rich.table import Table

    from harness.cli.tables import print_table
    from harness.store import gates
    from harness.store.db import Store

    if metric is not None and "/" not in metric:
        raise UsageError(f"--metric {metric!r}: expected TASK/METRIC, e.g. hellaswag/acc_norm")
    check_output_file(json_path, "--json")
    store = Store(db_path(db), read_only=True)
    try:
        rows = gates.history(store, tag_name, metric)
    finally:
        store.close()
    if not rows:
        raise UsageError(f"no complete run tagged {tag_name!r}" + (f" has {metric}" if metric else "") + f" in {db_path(db)}")
    table = Table(title=f"history of tag {tag_name}")
    for name in ("Run", "Created", "Model", "Task", "Metric", "Value", "95% CI", "n", "Gate"):
        table.add_column(name, justify="right" if name in ("Value", "95% CI", "n") else "left")
    for r in rows:
        ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        verdict = "-" if r["gate_id"] is None else \
            f"{'pass' if r['gate_passed'] else 'FAIL'} ({r['gate_kind']}{', ' + r['decision'] if r['decision'] else ''})"
        table.add_row(r["run_id"], r["created_at"], r["model"], r["task"], r["metric"], f"{r['value']:.4f}", ci,
                      str(r["n"]), verdict)
    print_table(table)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2, default=str))


@commands.command()
def tag(run_ref: str = typer.Argument(..., metavar="RUN"), tag_name: str = typer.Argument(..., metavar="TAG"),
        db: Optional[Path] = DbOption) -> None:
    """Add TAG to a run."""
    from harness.store.db import Store

    if not tag_name.strip():
        raise UsageError("the tag is empty")
    store = Store(db_path(db))
    try:
        run_id = store.resolve_run(run_ref)
        store.add_tags(run_id, [tag_name])
    finally:
        store.close()
    typer.echo(f"tagged {run_id} {tag_name}")


@commands.command()
def export(run_ref: str = typer.Argument(..., metavar="RUN"),
           parquet: Path = typer.Option(..., "--parquet", help="directory for one parquet file per table"),
           db: Optional[Path] = DbOption) -> None:
    """Export a run (runs, tags, tasks, samples, metrics) as parquet files."""
    from harness.store.db import Store
    from harness.store.runio import export_run

    store = Store(db_path(db), read_only=True)
    try:
        run_id = store.resolve_run(run_ref)
        counts = export_run(store, run_id, parquet)
    finally:
        store.close()
    typer.echo(f"exported run {run_id} to {parquet}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))


@commands.command("import")
def import_(directory: Path = typer.Argument(..., metavar="DIR"), db: Optional[Path] = DbOption) -> None:
    """Import a run exported with `harness export` (its files are checked against the manifest first)."""
    from harness.store.db import Store
    from harness.store.runio import import_verified, verified_export

    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    path = db_path(db)
    with verified_export(directory) as export:  # nothing is opened or created before the export checks out
        existed = path.exists()
        store = Store(path)
        try:
            run_id = import_verified(store, export)
        except BaseException:
            store.close()
            if not existed:  # the database this import created holds nothing: remove it again
                for created in (path, path.with_name(path.name + ".wal")):
                    created.unlink(missing_ok=True)
            raise
        store.close()
    typer.echo(f"imported run {run_id} into {path}")
