"""History pages: `history/` in `harness report`, the web view of `harness history`.

A page per tag with a complete run: per gated metric (every metric when no gate judged the tag's
runs) a plot of its value over the runs, oldest first, with the 95% interval as a bar and each run's
point coloured by the verdict of the latest gate that judged it as candidate on that metric (pass,
fail, or grey where no gate did), and a table of the same rows. The index lists the tags.
"""

from __future__ import annotations

import re
from pathlib import Path

from markupsafe import Markup

from harness.report import templates
from harness.report.plots import history_plot
from harness.store import gates as gate_store
from harness.store.db import Store


def page_name(name: str) -> str:
    """A tag's page here, or a run's in ../runs/ (the same sanitising as the site's run pages)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".html"


def tags(store: Store) -> list[dict]:
    """Every tag with a complete run: its name, how many complete runs carry it, and the latest one's time."""
    rows = store.con.execute(
        """SELECT t.tag, count(DISTINCT r.run_id), strftime(max(r.created_at), '%Y-%m-%d %H:%M:%S')
           FROM run_tags t JOIN runs r USING (run_id) WHERE r.status = 'complete' GROUP BY t.tag ORDER BY t.tag"""
    ).fetchall()
    return [{"tag": tag, "runs": n, "latest": latest} for tag, n, latest in rows]


def verdict(row: dict) -> str | None:
    """The metric's verdict in the run's gate: "pass" (pass, pass-fallback...), "fail", or None (not judged)."""
    decision = row.get("decision")
    if decision is None:
        return None
    return "pass" if str(decision).startswith("pass") else "fail"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _table_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        ci = "–" if r["ci_low"] is None or r["ci_high"] is None else f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        gate = "–" if r["gate_id"] is None else \
            f"{'pass' if r['gate_passed'] else 'FAIL'} ({r['gate_kind']}{', ' + r['decision'] if r['decision'] else ''})"
        out.append({**r, "run_page": page_name(r["run_id"]), "value_text": _num(r["value"]), "ci": ci, "gate": gate, "verdict": verdict(r)})
    return out


def _plots(rows: list[dict]) -> list[Markup]:
    keys = list(dict.fromkeys((r["task"], r["metric"]) for r in rows))
    plots = []
    for task, metric in keys:
        points = [(r["run_id"], r["value"], r["ci_low"], r["ci_high"], verdict(r))
                  for r in rows if (r["task"], r["metric"]) == (task, metric)]
        plot = history_plot(points, title=f"{task} {metric} over the runs", ylabel=metric)
        if plot:
            plots.append(plot)
    return plots


def history_page(store: Store, tag: str) -> str:
    rows = gate_store.history(store, tag)
    return templates.env().get_template("history.html").render(
        root="../", inline_assets=None, tag=tag, rows=_table_rows(rows), plots=_plots(rows),
        n_runs=len({r["run_id"] for r in rows}))


def write_history_pages(store: Store, out_dir: Path) -> Path:
    """history/index.html and a page per tag with a complete run; returns the index path."""
    folder = Path(out_dir) / "history"
    folder.mkdir(parents=True, exist_ok=True)
    listed = tags(store)
    for item in listed:
        item["page"] = page_name(item["tag"])
        (folder / item["page"]).write_text(history_page(store, item["tag"]), encoding="utf-8")
    index = folder / "index.html"
    index.write_text(templates.env().get_template("history_index.html").render(root="../", inline_assets=None,
                                                                                rows=listed), encoding="utf-8")
    return index
