"""Sequential gate pages: `gates/` in `harness report`.

A page per `harness gate --sequential`: the verdict, a row per metric (decision, documents used of
those available, the estimate and its anytime-valid interval in points, both e-values, the
tolerance), and per metric the band plot of its trace: the running estimate and interval over the
looks, the tolerance line and where the gate decided (or stopped). The index lists every gate.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from markupsafe import Markup

from harness.report import templates
from harness.report.plots import band_plot
from harness.store import gates as gate_store
from harness.store.db import Store


def page_name(gate_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", gate_id) + ".html"


def _float(value: object) -> float | None:
    """A number from the summary JSON ('inf' is how it writes an infinite e-value), None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _points(value: object, spec: str = "+.2f") -> str:
    x = _float(value)
    return "–" if x is None or not math.isfinite(x) else format(100 * x, spec)


def _evalue(value: object) -> str:
    x = _float(value)
    if x is None or math.isnan(x):
        return "–"
    return ("∞" if x > 0 else "-∞") if math.isinf(x) else format(x, ".3g")


def _saved(used: object, available: object) -> str:
    u, a = _float(used), _float(available)
    return "–" if u is None or not a else f"{100 * (1 - u / a):.0f}%"


def _metric_rows(summary: dict) -> list[dict]:
    rows = []
    for m in summary.get("metrics", []):
        decision = m.get("decision") or "undecided"
        rows.append({"task": m.get("task"), "metric": m.get("metric"), "decision": decision,
                     "passed": decision.startswith("pass"), "docs_used": m.get("docs_used", "–"),
                     "docs_available": m.get("docs_available", "–"), "estimate": _points(m.get("estimate")),
                     "ci": f"[{_points(m.get('ci_low'))}, {_points(m.get('ci_high'))}]",
                     "e_pass": _evalue(m.get("e_pass")), "e_fail": _evalue(m.get("e_fail")),
                     "tolerance": _points(m.get("tolerance"), ".2f"),
                     "p_fallback": _evalue(m.get("p_fallback"))})
    return rows


def _nan(value: float | None) -> float:
    return math.nan if value is None else 100 * value


def _plots(gate: dict, rows: list[dict]) -> list[Markup]:
    tolerances = {(m.get("task"), m.get("metric")): _float(m.get("tolerance")) for m in gate["summary"].get("metrics", [])}
    default = _float(gate["policy"].get("tolerance")) if isinstance(gate["policy"], dict) else None
    keys = list(dict.fromkeys([*tolerances, *((r["task"], r["metric"]) for r in rows)]))
    plots = []
    for key in keys:
        looks = [r for r in rows if (r["task"], r["metric"]) == key]
        if not looks:
            continue
        decided = next((r for r in looks if r["decision"] is not None), None)
        stop, label = (decided, "decided") if decided is not None else (looks[-1], "stopped")
        tolerance = tolerances.get(key) or default or 0.0
        points = [(float(r["docs_used"]), _nan(r["estimate"]), _nan(r["ci_low"]), _nan(r["ci_high"])) for r in looks]
        plots.append(band_plot(points, tolerance_points=100 * tolerance, stop_at=float(stop["docs_used"]), stop_label=label,
                               title=f"{key[0]} {key[1]}: candidate - baseline over the looks"))
    return plots


SUMMARY_DEFAULTS = {"docs_used": "–", "docs_available": "–", "wall_seconds": None, "alpha": "–", "alpha_seq": "–",
                    "alpha_fallback": "–", "baseline_model": None, "candidate_model": None}


def gate_page(store: Store, gate: dict) -> str:
    summary = {**SUMMARY_DEFAULTS, **gate["summary"]}
    return templates.env().get_template("gate.html").render(
        root="../", inline_assets=None, gate=gate, summary=summary, metrics=_metric_rows(summary),
        plots=_plots(gate, gate_store.trace(store, gate["gate_id"])),
        saved=_saved(summary.get("docs_used"), summary.get("docs_available")))


def write_gate_pages(store: Store, out_dir: Path) -> Path:
    """gates/index.html and a page per sequential gate (none in a database older than version 4); returns the index path."""
    folder = Path(out_dir) / "gates"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for gate in gate_store.gates(store):
        (folder / page_name(gate["gate_id"])).write_text(gate_page(store, gate), encoding="utf-8")
        summary = gate["summary"]
        rows.append({"gate": gate, "page": page_name(gate["gate_id"]), "docs_used": summary.get("docs_used", "–"),
                     "docs_available": summary.get("docs_available", "–"),
                     "saved": _saved(summary.get("docs_used"), summary.get("docs_available"))})
    index = folder / "index.html"
    index.write_text(templates.env().get_template("gate_index.html").render(root="../", inline_assets=None, rows=rows),
                     encoding="utf-8")
    return index
