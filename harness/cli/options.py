"""Options and helpers that several command modules share."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from harness.core.errors import UsageError

if TYPE_CHECKING:
    from harness.report.mlflow_tracking import MlflowTarget

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $HARNESS_DB or results/harness.duckdb)")


def check_output_file(path: Optional[Path], option: str) -> None:
    """An output file a command will write (--json, --html, --junit, --markdown): checked before
    anything runs, so a bad target never costs a run: its folder exists and is writable, and the
    path is not a directory."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory: give a file path")
    if not path.parent.is_dir():
        raise UsageError(f"{option}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def check_output_dir(path: Path, option: str) -> None:
    """An output directory (--out): not an existing file, and creatable where it does not exist."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"{option} {path}: {existing} is not a writable directory")


def db_path(path: Optional[Path]) -> Path:
    """--db, else $HARNESS_DB, else results/harness.duckdb."""
    from harness.store.db import default_db_path

    return path or default_db_path()


# MLflow tracking (harness[mlflow], docs/mlflow.md): on `run`, `gate` and `recipe run`.
MlflowOption = typer.Option(False, "--mlflow", help="log to MLflow ($MLFLOW_TRACKING_URI, else MLflow's default)")
MlflowUriOption = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI (sqlite:///mlflow.db, http://host:5000); "
                               "implies --mlflow")
MlflowRequiredOption = typer.Option(False, "--mlflow-required", help="exit 2 when MLflow logging fails (the results "
                                    "stay stored); implies --mlflow")
MlflowExperimentOption = typer.Option(None, "--mlflow-experiment", help="MLflow experiment (default: harness)")


def mlflow_target(enabled: bool, uri: Optional[str], required: bool, experiment: Optional[str]) -> MlflowTarget | None:
    """The MLflow flags as a checked target (None when off): installed and answering, before anything runs."""
    if not (enabled or uri or required or experiment is not None):
        return None  # mlflow is never imported when its flags are absent
    from harness.report.mlflow_tracking import check_target, resolve_target

    target = resolve_target(enabled, uri, required, experiment, os.environ.get("MLFLOW_TRACKING_URI"))
    if target is not None:
        check_target(target)
    return target


def publish_to_mlflow(target: MlflowTarget | None, what: str, publish: Callable[[], object]) -> None:
    """Log stored results to MLflow. A failure never undoes what is stored: one warning line, or, with
    --mlflow-required, a UsageError (exit 2, the same as any other input or environment error)."""
    if target is None:
        return
    from harness.core.redact import strip_userinfo
    from harness.report.mlflow_tracking import first_line

    try:
        publish()
    except Exception as exc:  # the tracker's failure, whatever its kind, is reported in one line
        message = strip_userinfo(f"MLflow logging of {what} to {target.shown} failed: {first_line(exc)}")
        if target.required:
            raise UsageError(f"{message} (--mlflow-required; the results are stored)") from None
        typer.echo(f"harness: warning: {message}", err=True)


# lm-eval task YAMLs (docs/lm-eval-yaml.md): on `run` and `tasks`, spelled both ways as lm-eval does.
IncludePathOption = typer.Option([], "--include-path", "--include_path", help="a directory of lm-eval task YAMLs "
                                 "(repeatable; also HARNESS_INCLUDE_PATH=DIR:DIR)")


def include_yaml_tasks(paths: list[Path]):
    """Register the YAML tasks of --include-path directories before any task is looked up; the
    catalog of what loaded and what was refused (None without the option)."""
    if not paths and not os.environ.get("HARNESS_INCLUDE_PATH"):
        return None
    from harness import tasks as catalog

    return catalog.include_paths(paths)
