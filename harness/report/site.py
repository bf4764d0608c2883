"""Static HTML reports: the leaderboard site (`harness report`) and comparison pages (`harness compare --html`).

Pages open from file:// with no network: CSS and JavaScript are copied next to the site's pages
(or inlined in a single-file comparison page), plots are inline SVG. All text goes through
jinja2's autoescaping; sample rows travel as JSON inside <script type="application/json"> with
'<' escaped, and the browser puts them into the page with textContent only.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup

from harness.core.errors import UsageError
from harness.report.data import PROMPT_CHARS, SAMPLES_PER_RUN, MetricCell, RunSummary, leaderboard_columns, load_runs, sample_json
from harness.report.svg import Bar, ci_bars, histogram, scatter
from harness.report.templates import ASSETS, STATIC, env, inline_assets

if TYPE_CHECKING:
    from harness.decisions.compare import Comparison
    from harness.store.db import Store

MAX_FLIPS = 2000


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def page_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id) + ".html"


# ---- leaderboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderCell:
    value: float
    text: str
    pm: str
    title: str


def leader_cell(cell: MetricCell | None) -> LeaderCell | None:
    if cell is None or cell.value is None or not math.isfinite(cell.value):
        return None
    pm, interval = "", ""
    if cell.ci_low is not None and cell.ci_high is not None and math.isfinite(cell.ci_low) and math.isfinite(cell.ci_high):
        pm = _num((cell.ci_high - cell.ci_low) / 2, 3)
        interval = f" 95% CI [{_num(cell.ci_low)}, {_num(cell.ci_high)}]"
    return LeaderCell(value=cell.value, text=_num(cell.value, 3), pm=pm,
                      title=f"{cell.task} {cell.metric} = {_num(cell.value)}{interval}, n = {cell.n}")


def _leaderboard_html(runs: list[RunSummary], generated: str) -> str:
    columns = leaderboard_columns(runs)
    rows, others = [], []
    for run in runs:
        if run.status != "complete":
            others.append({"run": run, "page": page_name(run.run_id)})
            continue
        by_key = {(c.task, c.metric): c for c in run.metrics}
        rows.append({"run": run, "page": page_name(run.run_id), "suite": run.suite or "(tasks)",
                     "cells": [leader_cell(by_key.get(col)) for col in columns]})
    return env().get_template("index.html").render(
        root="", inline_assets=None, generated=generated, columns=columns, rows=rows, others=others,
        all_tags=sorted({t for r in rows for t in r["run"].tags}), all_suites=sorted({r["suite"] for r in rows}),
    )


# ---- run pages --------------------------------------------------------------------------------


def _compact(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return "–" if value is None else str(value)


def _run_sections(run: RunSummary) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    config = [("run id", run.run_id), ("status", run.status), ("model", run.model),
              ("model fingerprint", run.model_fingerprint), ("backend", run.backend),
              ("backend args", _compact(run.backend_args)), ("suite", run.suite or "–"),
              ("few-shot", _compact(run.num_fewshot)), ("limit", _compact(run.limit_docs)), ("seed", _compact(run.seed)),
              ("tags", ", ".join(run.tags) or "–"), ("created", run.created_at), ("finished", run.finished_at or "–")]
    meta = dict(run.metadata)
    repro: list[tuple[str, str]] = []
    git = meta.pop("git", None)
    if isinstance(git, dict):
        repro.append(("git sha", f"{git.get('sha') or '–'}{' (dirty)' if git.get('dirty') else ''}"))
    elif git is not None:
        repro.append(("git", _compact(git)))
    for key in ("harness_version", "python", "backend", "hardware", "seed", "argv"):
        if key in meta:
            repro.append((key.replace("_", " "), _compact(meta.pop(key))))
    libraries = meta.pop("libraries", None)
    if isinstance(libraries, dict):
        repro.extend((f"library {name}", _compact(version)) for name, version in sorted(libraries.items()))
    tasks = meta.pop("tasks", None)
    if isinstance(tasks, dict):
        repro.extend((f"task {name}", _compact(info)) for name, info in sorted(tasks.items()))
    repro.extend((key, _compact(value)) for key, value in sorted(meta.items()))
    return config, repro


def _metrics_rows(run: RunSummary) -> list[dict]:
    rows = []
    for m in run.metrics:
        ci = f"[{_num(m.ci_low)}, {_num(m.ci_high)}]" if m.ci_low is not None and m.ci_high is not None else "–"
        rows.append({"task": m.task, "metric": m.metric, "value": "" if m.value is None else m.value,
                     "text": _num(m.value), "stderr": "" if m.stderr is None else m.stderr,
                     "stderr_text": _num(m.stderr), "ci_text": ci, "n": _compact(m.n)})
    return rows


def _metrics_plot(run: RunSummary) -> Markup:
    bars = [Bar(f"{m.task} {m.metric}", m.value, m.ci_low, m.ci_high) for m in run.metrics
            if m.value is not None and m.ci_low is not None and m.ci_high is not None][:60]
    return ci_bars(bars, zero_line=False, title="metrics with 95% confidence intervals")


def _run_html(run: RunSummary, samples_text: str, n_embedded: int) -> str:
    config, repro = _run_sections(run)
    sample_tasks = sorted({t["task"] for t in run.tasks} | {m.task for m in run.metrics})
    return env().get_template("run.html").render(
        root="../", inline_assets=None, run=run, config=config, reproducibility=repro, metrics=_metrics_rows(run),
        metrics_plot=_metrics_plot(run), samples_json=Markup(samples_text), n_embedded=n_embedded,
        limit=SAMPLES_PER_RUN, prompt_chars=PROMPT_CHARS, sample_tasks=sample_tasks,
    )


def build_site(store: Store, out_dir: Path) -> Path:
    """Write index.html, runs/<run>.html and assets/ under out_dir; return the index path."""
    out_dir = Path(out_dir)
    try:
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
        (out_dir / "assets").mkdir(exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    for name in ASSETS:
        shutil.copyfile(STATIC / name, out_dir / "assets" / name)
    runs = load_runs(store)
    generated = datetime.now().strftime("%Y-%m-%d %H:%M")
    index = out_dir / "index.html"
    index.write_text(_leaderboard_html(runs, generated), encoding="utf-8")
    by_id = {run.run_id: run for run in runs}
    written: set[str] = set()
    for run_id, count, text in sample_json(store):
        run = by_id.get(run_id)
        if run is not None:
            (out_dir / "runs" / page_name(run_id)).write_text(_run_html(run, text, count), encoding="utf-8")
            written.add(run_id)
    for run in runs:
        if run.run_id not in written:
            (out_dir / "runs" / page_name(run.run_id)).write_text(_run_html(run, "[]", 0), encoding="utf-8")
    from harness.report.bench_pages import write_bench_pages  # serving benchmarks: bench/index.html and a page each

    write_bench_pages(store, out_dir)
    from harness.report.lineage_pages import write_lineage_pages  # recipes' checkpoints: lineage/index.html and a page each

    write_lineage_pages(store, out_dir)
    from harness.report.gate_pages import write_gate_pages  # sequential gates: gates/index.html and a page each

    write_gate_pages(store, out_dir)
    from harness.report.history_pages import write_history_pages  # each tag's runs over time: history/index.html and a page each

    write_history_pages(store, out_dir)
    return index


# ---- comparison page --------------------------------------------------------------------------


def _verdict(row, alpha: float) -> str:
    if not (row.p_adjusted < alpha) or row.delta == 0:
        return ""
    return "better" if (row.delta > 0) == row.higher_is_better else "worse"


def comparison_html(comparison: Comparison, alpha: float = 0.05) -> str:
    colours = {"better": "#1a7f37", "worse": "#c0262d", "": "#777"}
    metrics = [{"row": m, "verdict": _verdict(m, alpha)} for m in comparison.metrics]
    delta_plot = ci_bars([Bar(f"{m['row'].task} {m['row'].metric}", m["row"].delta, m["row"].ci_low, m["row"].ci_high,
                              colours[m["verdict"]]) for m in metrics], title="delta B - A with 95% CI")
    lls = [{"row": ll, "shown": min(len(ll.pairs), 2000),
            "histogram": histogram(list(ll.diffs), xlabel="loglikelihood B − A"),
            "scatter": scatter(list(ll.pairs), xlabel="loglikelihood A", ylabel="loglikelihood B")}
           for ll in comparison.loglikelihood]
    return env().get_template("compare.html").render(
        root=None, inline_assets=inline_assets(), c=comparison, metrics=metrics, delta_plot=delta_plot, lls=lls,
        flips=comparison.flips[:MAX_FLIPS], alpha=alpha,
    )


def render_comparison(comparison: Comparison, path: Path) -> None:
    """One self-contained HTML file: deltas with CI bars, loglikelihood plots, flipped samples."""
    path = Path(path)
    try:
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(comparison_html(comparison), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
