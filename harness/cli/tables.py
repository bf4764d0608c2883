"""Terminal tables of metrics and runs (rich)."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table


def _fmt(value: object, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _text(value: object) -> str:
    """A cell of text: missing values (None, or NaN where pandas filled a gap) are empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def metrics_table(frame: pd.DataFrame, task_info: dict[str, dict] | None = None, title: str | None = None) -> Table:
    """frame columns: task, metric, value, stderr, ci_low, ci_high, n."""
    task_info = task_info or {}
    table = Table(title=title)
    for name, justify in (("Task", "left"), ("Version", "right"), ("Shots", "right"), ("Metric", "left"),
                          ("Value", "right"), ("± Stderr", "right"), ("95% CI", "right"), ("n", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in frame.itertuples(index=False):
        info = task_info.get(row.task, {})
        ci = "-" if row.ci_low is None or pd.isna(row.ci_low) else f"[{row.ci_low:.4f}, {row.ci_high:.4f}]"
        table.add_row(row.task, str(info.get("version", "")), _fmt(info.get("num_fewshot", "")), row.metric,
                      _fmt(row.value), _fmt(row.stderr), ci, str(row.n))
    return table


def runs_table(frame: pd.DataFrame) -> Table:
    table = Table()
    for name in ("Run", "Created (UTC)", "Status", "Model", "Suite", "Tags", "Samples"):
        table.add_column(name)
    for row in frame.itertuples(index=False):
        table.add_row(_text(row.run_id), _text(row.created_at)[:19], _text(row.status), _text(row.model), _text(row.suite),
                      _text(row.tags), _text(row.samples))
    return table


def print_table(table: Table) -> None:
    Console(width=200 if not Console().is_terminal else None).print(table)
