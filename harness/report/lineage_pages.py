"""Lineage pages: `harness lineage CHILD --html` and `lineage/` in `harness report`.

A page per checkpoint that has a parent: its chain up to the root, and for each edge the step
that made it, the gate verdict, the paired deltas, distribution fidelity (KLD, same top p,
delta-p, PPL ratio), size and speed; the loss curve of a training step; and, for each parent on
the chain, the plot of accuracy delta against size over all its children (the quantization
ladder). The index lists every checkpoint the database knows.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from harness.recipe import view
from harness.report import templates
from harness.report.plots import COLOURS, Series, line_plot
from harness.store import lineage
from harness.store.db import Store
from harness.store.migrations import current_version

LINEAGE_VERSION = 3  # the schema version that added artifacts and their edges


def page_name(artifact_id: str) -> str:
    return f"{artifact_id[:16]}.html"


def ladder_plot(store: Store, parent: str) -> Markup:
    points = [p for p in view.ladder(store, parent) if p["accuracy_delta"] is not None and p["bytes"]]
    if len(points) < 1:
        return Markup("")
    series = Series("children", tuple((p["bytes"] / 1e6, p["accuracy_delta"], p["step"] or p["child"][:8]) for p in points))
    return line_plot([series], xlabel="size (MB)", ylabel="accuracy delta (points)",
                     title=f"children of {parent[:12]}: accuracy delta against size")


def loss_plot(node: dict) -> Markup:
    curve = view.loss_curve(node)
    if not curve:
        return Markup("")
    return line_plot([Series("training loss", tuple((s, v, "") for s, v in curve), COLOURS[1])],
                     xlabel="optimizer step", ylabel="loss", title=f"loss curve of {node['artifact_id'][:12]}")


def _num(value: object, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _metric_rows(report: dict) -> list[dict]:
    rows = []
    for m in (report.get("comparison") or {}).get("metrics", []):
        rows.append({"task": m["task"], "metric": m["metric"], "a": _num(m.get("value_a")), "b": _num(m.get("value_b")),
                     "delta": _num(m.get("delta"), "+.4f"), "ci": f"[{_num(m.get('ci_low'))}, {_num(m.get('ci_high'))}]",
                     "p": _num(m.get("p_adjusted"), ".3g"), "n": m.get("n_paired")})
    return rows


def _edge_sections(store: Store, lineage_view: dict) -> list[dict]:
    nodes = {n["artifact_id"]: n for n in lineage_view["nodes"]}
    sections = []
    for edge in lineage_view["edges"]:
        report = edge["report"] or {}
        fidelity = report.get("fidelity") or {}
        sections.append({"edge": edge, "report": report, "fidelity": {k: fidelity.get(k) for k in view.HEADLINE_FIDELITY if k in fidelity},
                         "metrics": _metric_rows(report),
                         "gate": {"passed": True, "skipped": None, **(report.get("gate") or {})},
                         "size": {"parent_bytes": None, "child_bytes": None, "parent_bits_per_weight": None, "child_bits_per_weight": None,
                                  **(report.get("size") or {})},
                         "speed": {"parent": None, "child": None, **(report.get("speed") or {})},
                         "accuracy_delta": view.accuracy_delta(report), "loss": loss_plot(nodes.get(edge["child"], {"artifact_id": edge["child"]})),
                         "ladder": ladder_plot(store, edge["parent"])})
    return sections


def lineage_page(store: Store, lineage_view: dict, root: str | None = None) -> str:
    """The page of one chain; self-contained (inline assets) unless `root` points to a site's assets."""
    return templates.env().get_template("lineage.html").render(
        root=root, inline_assets=None if root is not None else templates.inline_assets(), view=lineage_view,
        sections=_edge_sections(store, lineage_view))


def write_lineage_pages(store: Store, out_dir: Path) -> Path:
    """lineage/index.html and a page per checkpoint with a parent; returns the index path."""
    folder = Path(out_dir) / "lineage"
    folder.mkdir(parents=True, exist_ok=True)
    edges = lineage.all_edges(store) if current_version(store.con) >= LINEAGE_VERSION else []  # an older database has none
    children = list(dict.fromkeys(e["child"] for e in edges))
    for child in children:
        page = lineage_page(store, view.lineage_of(store, child), root="../")
        (folder / page_name(child)).write_text(page, encoding="utf-8")
    rows = [{"edge": e, "page": page_name(e["child"])} for e in edges]
    index = folder / "index.html"
    index.write_text(templates.env().get_template("lineage_index.html").render(root="../", inline_assets=None, rows=rows),
                     encoding="utf-8")
    return index
