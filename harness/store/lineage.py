"""Artifact rows, lineage edges and per-edge reports in the results database (schema version 3).

An edge says how a child checkpoint was made from its parent: the relation (Hugging Face model
cards' `base_model_relation` plus `converted` and `dequantized`), the recipe and step, the
step's parameters, the data and seed it used, the library versions, wall time and peak memory.
Its `step_key` is the hash of the step's inputs: `find_step` answers whether a step with these
inputs has already produced a child that is still stored, so a resumed recipe skips it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from harness.store import artifacts
from harness.store.artifacts import Artifact
from harness.store.db import Store

RELATIONS = ("adapter", "merge", "finetune", "quantized", "converted", "dequantized")


@dataclass(frozen=True)
class Edge:
    child: str
    parent: str
    relation: str
    step_key: str | None = None
    recipe_id: str | None = None
    step: str | None = None
    step_kind: str | None = None
    params: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    seed: int | None = None
    versions: dict = field(default_factory=dict)
    wall_seconds: float | None = None
    peak_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}: expected one of {', '.join(RELATIONS)}")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def register_artifact(store: Store, artifact: Artifact, model_fingerprint: str | None) -> None:
    store.con.execute(
        "INSERT OR IGNORE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [artifact.artifact_id, artifact.format, str(artifact.path), artifact.model_spec, model_fingerprint, artifact.bytes,
         artifact.parameters, artifact.bits_per_weight, json.dumps(artifact.metadata, sort_keys=True, default=str), _now()],
    )


def add_edge(store: Store, edge: Edge) -> None:
    row = asdict(edge)
    store.con.execute(
        "INSERT OR REPLACE INTO artifact_edges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row["child"], row["parent"], row["relation"], row["step_key"], row["recipe_id"], row["step"], row["step_kind"],
         json.dumps(row["params"], sort_keys=True, default=str), row["data_fingerprint"], row["seed"],
         json.dumps(row["versions"], sort_keys=True), row["wall_seconds"], row["peak_memory_bytes"], _now()],
    )


def find_step(store: Store, step_key: str) -> str | None:
    """The child a step with these inputs made, if it is still in the artifact store."""
    rows = store.con.execute("SELECT child FROM artifact_edges WHERE step_key = ? ORDER BY created_at DESC",
                             [step_key]).fetchall()
    for (child,) in rows:
        if artifacts.is_complete(artifacts.artifacts_root() / child):
            return str(child)
    return None


def artifact_row(store: Store, artifact_id: str) -> dict | None:
    cursor = store.con.execute("SELECT * FROM artifacts WHERE artifact_id = ?", [artifact_id])
    row = cursor.fetchone()
    if row is None:
        return None
    record = dict(zip([d[0] for d in cursor.description], row))
    record["metadata"] = json.loads(record["metadata"]) if record["metadata"] else {}
    return record


def _edge_dicts(cursor: object) -> list[dict]:
    rows = cursor.fetchall()  # type: ignore[attr-defined]
    names = [d[0] for d in cursor.description]  # type: ignore[attr-defined]
    edges = []
    for row in rows:
        record = dict(zip(names, row))
        for key in ("params", "versions"):
            record[key] = json.loads(record[key]) if record[key] else {}
        edges.append(record)
    return edges


def parent_edge(store: Store, child: str) -> dict | None:
    edges = _edge_dicts(store.con.execute("SELECT * FROM artifact_edges WHERE child = ? ORDER BY created_at", [child]))
    return edges[0] if edges else None


def child_edges(store: Store, parent: str) -> list[dict]:
    return _edge_dicts(store.con.execute("SELECT * FROM artifact_edges WHERE parent = ? ORDER BY created_at", [parent]))


def all_edges(store: Store) -> list[dict]:
    return _edge_dicts(store.con.execute("SELECT * FROM artifact_edges ORDER BY created_at"))


def ancestry(store: Store, child: str) -> list[dict]:
    """The edges from `child` up to its root, nearest first (a cycle cannot be stored: ids are content hashes)."""
    chain: list[dict] = []
    seen = {child}
    edge = parent_edge(store, child)
    while edge is not None and edge["parent"] not in seen:
        chain.append(edge)
        seen.add(edge["parent"])
        edge = parent_edge(store, edge["parent"])
    return chain


def resolve_stored(store: Store, ref: str) -> str:
    """A full artifact id from an id or prefix, among the artifacts this database knows."""
    from harness.core.errors import UsageError

    ref = ref.strip().lower()
    if len(ref) < artifacts.MIN_PREFIX:
        raise UsageError(f"bad artifact id {ref!r}: give at least {artifacts.MIN_PREFIX} hex digits")
    rows = store.con.execute("SELECT artifact_id FROM artifacts WHERE artifact_id LIKE ? ORDER BY artifact_id",
                             [ref + "%"]).fetchall()
    if not rows:
        raise UsageError(f"no artifact {ref} in {store.path} (`harness recipe run` registers them)")
    if len(rows) > 1:
        raise UsageError(f"artifact id {ref} is ambiguous in {store.path}: {', '.join(r[0][:12] for r in rows[:5])}")
    return str(rows[0][0])


def save_edge_report(store: Store, child: str, parent: str, recipe_id: str, report: dict) -> None:
    store.con.execute("INSERT OR REPLACE INTO edge_reports VALUES (?, ?, ?, ?, ?)",
                      [child, parent, recipe_id, json.dumps(report, sort_keys=True, default=str), _now()])


def edge_reports(store: Store, child: str, parent: str) -> list[dict]:
    rows = store.con.execute("SELECT recipe_id, report FROM edge_reports WHERE child = ? AND parent = ? ORDER BY created_at DESC",
                             [child, parent]).fetchall()
    return [{"recipe_id": r[0], **json.loads(r[1])} for r in rows]
