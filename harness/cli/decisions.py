"""Commands that turn stored runs into decisions: compare, gate, tag, export, import."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import DbOption, check_output_file, db_path
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
    candidate: str = typer.Option(..., "--candidate", help="run id or tag"),
    policy_path: Optional[Path] = typer.Option(None, "--policy", help="policy YAML (default: suites/gate.yaml defaults)"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML, one test case per task"),
    markdown_path: Optional[Path] = typer.Option(None, "--markdown", help="write the summary here instead of stdout"),
    db: Optional[Path] = DbOption,
) -> None:
    """Exit 0 if the candidate has no significant regression beyond tolerance, 1 if it has, 2 on unusable input."""
    from harness.decisions.compare import compare_runs
    from harness.decisions.gate import decide, junit_xml, load_policy, markdown
    from harness.store.db import Store

    check_output_file(junit, "--junit")
    check_output_file(markdown_path, "--markdown")
    policy = load_policy(policy_path)
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
    summary = markdown(result)
    if markdown_path is not None:
        markdown_path.write_text(summary)
    else:
        typer.echo(summary, nl=False)
    if junit is not None:
        junit.write_text(junit_xml(result))
    if not result.passed:
        typer.echo(f"harness: gate failed: {len(result.regressions)} regression(s)", err=True)
        raise typer.Exit(1)


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
