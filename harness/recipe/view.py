"""What `harness lineage CHILD` shows: the chain from a checkpoint up to its root, a report per edge.

`lineage_of` is plain JSON (the `--json` output and what the HTML pages render). `ladder` is
every child of one parent with its accuracy delta and size, the data of the quantization-ladder
plot; `loss_curve` the training loss a step stored with its checkpoint.
"""

from __future__ import annotations

from typing import Any

from harness.store import lineage
from harness.store.db import Store

HEADLINE_FIDELITY = ("n_tokens", "kld_mean", "kld_se", "kld_median", "kld_p99", "kld_max", "same_top_pct", "same_top_pct_se",
                     "delta_p_rms_pct", "delta_p_rms_pct_se", "ln_ppl_ratio", "ln_ppl_ratio_se", "ppl_base", "ppl_child")


def _node(store: Store, artifact_id: str) -> dict:
    row = lineage.artifact_row(store, artifact_id) or {"artifact_id": artifact_id}
    return {k: row.get(k) for k in ("artifact_id", "format", "path", "model_spec", "model_fingerprint", "bytes",
                                    "parameters", "bits_per_weight")} | {"metadata": row.get("metadata") or {}}


def _edge(store: Store, edge: dict) -> dict:
    reports = lineage.edge_reports(store, edge["child"], edge["parent"])
    return {k: edge[k] for k in ("child", "parent", "relation", "recipe_id", "step", "step_kind", "params",
                                 "data_fingerprint", "seed", "versions", "wall_seconds", "peak_memory_bytes")} | {
        "created_at": str(edge["created_at"]), "report": reports[0] if reports else None}


def lineage_of(store: Store, ref: str) -> dict:
    """The chain of `ref` (an artifact id or prefix) to its root: nodes child first, edges nearest first."""
    child = lineage.resolve_stored(store, ref)
    chain = lineage.ancestry(store, child)
    ids = [child] + [edge["parent"] for edge in chain]
    return {"artifact": child, "nodes": [_node(store, i) for i in ids], "edges": [_edge(store, e) for e in chain]}


def accuracy_delta(report: dict | None) -> float | None:
    """The mean delta (child - parent) over the compared metrics that are accuracies, in points."""
    if not report or not report.get("comparison"):
        return None
    deltas = [m["delta"] for m in report["comparison"]["metrics"] if m.get("delta") is not None
              and (m["metric"].startswith("acc") or m["metric"].startswith("exact_match"))]
    return 100.0 * sum(deltas) / len(deltas) if deltas else None


def ladder(store: Store, parent: str) -> list[dict]:
    """Every child of `parent` with its relation, size and accuracy delta (the ladder plot's points)."""
    points = []
    for edge in lineage.child_edges(store, parent):
        reports = lineage.edge_reports(store, edge["child"], parent)
        report = reports[0] if reports else None
        node = _node(store, edge["child"])
        points.append({"child": edge["child"], "step": edge["step"], "relation": edge["relation"], "bytes": node["bytes"],
                       "bits_per_weight": node["bits_per_weight"], "accuracy_delta": accuracy_delta(report),
                       "kld_mean": ((report or {}).get("fidelity") or {}).get("kld_mean")})
    return points


def gate_word(report: dict | None) -> str:
    """The gate verdict of an edge report in one word: pass, FAIL, skipped (too few documents), or -."""
    gate = (report or {}).get("gate") or {}
    if not gate:
        return "-"
    return "skipped" if gate.get("skipped") else "pass" if gate.get("passed") else "FAIL"


def loss_curve(node: dict) -> list[tuple[float, float]]:
    return [(float(s), float(v)) for s, v in node.get("metadata", {}).get("loss_curve", [])]


def summary_rows(view: dict) -> list[dict[str, Any]]:
    """One row per edge for the terminal table."""
    rows = []
    for edge in view["edges"]:
        report = edge["report"] or {}
        fid = report.get("fidelity") or {}
        size = report.get("size") or {}
        rows.append({"child": edge["child"][:12], "parent": edge["parent"][:12], "relation": edge["relation"],
                     "step": f"{edge['step'] or '-'} ({edge['step_kind'] or '-'})", "accuracy_delta": accuracy_delta(report),
                     "gate": gate_word(report),
                     "kld_mean": fid.get("kld_mean"), "same_top_pct": fid.get("same_top_pct"),
                     "bits_per_weight": size.get("child_bits_per_weight"), "bytes": size.get("child_bytes")})
    return rows
