"""`harness recipe run|list` and `harness lineage`: make checkpoints with lineage, and look at it."""

from __future__ import annotations

import json
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

commands = typer.Typer()
recipe_commands = typer.Typer(help="Recipes: steps that make checkpoints (LoRA, merge, GGUF export, quantization), "
                                   "evaluated and gated per parent -> child edge.", no_args_is_help=True)
commands.add_typer(recipe_commands, name="recipe")


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _print_rows(rows: list[dict], title: str) -> None:
    from rich.table import Table

    from harness.cli.tables import print_table

    table = Table(title=title)
    if not rows:
        typer.echo(f"{title}: no edges")
        return
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    print_table(table)


@recipe_commands.command("run")
def run_cmd(
    recipe: str = typer.Argument(..., help="a recipe file (.yaml) or the name of a shipped one (harness recipe list)"),
    from_: Optional[str] = typer.Option(None, "--from", help="parent model spec replacing the recipe's (hf:DIR, gguf:FILE, artifact:ID)"),
    db: Optional[Path] = DbOption,
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result (checkpoints, edges, reports) as JSON"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
    executor: str = typer.Option("local", "--executor", help="local | ray: evaluate the checkpoints concurrently on "
                                 "Ray replicas (docs/scale-out.md)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="--executor ray: replicas per checkpoint"),
    worker_cpus: Optional[float] = typer.Option(None, "--worker-cpus", min=0.01, help="CPUs per replica"),
    worker_gpus: Optional[float] = typer.Option(None, "--worker-gpus", min=0, help="GPUs per replica"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="HOST:PORT or ray://HOST:10001"),
    mlflow: bool = MlflowOption,
    mlflow_uri: Optional[str] = MlflowUriOption,
    mlflow_required: bool = MlflowRequiredOption,
    mlflow_experiment: Optional[str] = MlflowExperimentOption,
) -> int:
    """Check the recipe, make its checkpoints (resuming finished steps), evaluate each, report every edge.
    Exit 1 when an edge fails the recipe's gate policy."""
    from harness.cli.run import ray_options
    from harness.recipe.runner import run_recipe
    from harness.recipe.view import accuracy_delta, gate_word

    check_output_file(json_out, "--json")
    ray = ray_options(executor, workers, worker_cpus, worker_gpus, ray_address)
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_required, mlflow_experiment)
    result = run_recipe(recipe, db_path(db), parent=from_, show_progress=not no_progress, ray=ray)
    names = {a.artifact_id: n for n, a in result.nodes.items()}
    names.update({p: "root" for p, _ in result.edges if p not in names})
    rows = []
    for (parent, child), report in result.reports.items():
        fid = report.get("fidelity") or {}
        rows.append({"edge": f"{names.get(parent, parent[:12])} -> {names.get(child, child[:12])}", "child": child[:12],
                     "accuracy_delta": accuracy_delta(report), "gate": gate_word(report), "kld_mean": fid.get("kld_mean"),
                     "same_top_pct": fid.get("same_top_pct"), "bits_per_weight": (report.get("size") or {}).get("child_bits_per_weight")})
    _print_rows(rows, f"recipe {result.recipe_id}: made {', '.join(result.made) or 'nothing'}; "
                      f"reused {', '.join(result.reused) or 'nothing'}")
    if json_out is not None:
        payload = {"recipe_id": result.recipe_id, "nodes": {n: a.artifact_id for n, a in result.nodes.items()},
                   "made": result.made, "reused": result.reused, "gate_passed": result.gate_passed,
                   "edges": [{"parent": p, "child": c, "report": result.reports.get((p, c))} for p, c in result.edges]}
        json_out.write_text(json.dumps(payload, indent=2, default=str))
    if tracking is not None:  # every checkpoint and edge is stored by now
        from harness.report.mlflow_models import log_recipe

        publish_to_mlflow(tracking, f"recipe {result.recipe_id}",
                          lambda: log_recipe(tracking, db_path(db), result.recipe_id, result.edges, names))
    return 0 if result.gate_passed else 1


@recipe_commands.command("list")
def list_cmd() -> None:
    """The recipes shipped in recipes/."""
    from harness.recipe.spec import load_recipe, recipe_names

    for name in recipe_names():
        typer.echo(f"{name}: {load_recipe(name)[1].description}")


@commands.command()
def lineage(
    artifact: str = typer.Argument(..., metavar="CHILD", help="an artifact id or a unique prefix (6+ hex digits)"),
    db: Optional[Path] = DbOption,
    json_out: bool = typer.Option(False, "--json", help="print the chain and its reports as JSON"),
    html: Optional[Path] = typer.Option(None, "--html", help="write the lineage page to this HTML file"),
) -> None:
    """The chain from a checkpoint up to its root, with the regression report of every edge."""
    from harness.recipe.view import lineage_of, summary_rows
    from harness.store.db import Store

    check_output_file(html, "--html")
    store = Store(db_path(db), read_only=True)
    try:
        view = lineage_of(store, artifact)
        if html is not None:
            from harness.report.lineage_pages import lineage_page

            html.write_text(lineage_page(store, view), encoding="utf-8")
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(view, indent=2, default=str))
    else:
        _print_rows(summary_rows(view), f"lineage of {view['artifact'][:12]} ({len(view['edges'])} edges to the root)")
