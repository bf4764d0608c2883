"""Gate verdicts in the results database: every gate (schema version 5), sequential traces (version 4).

`gates` and `gate_decisions` hold every `harness gate` verdict, fixed or sequential: the runs
compared, the policy, and per gated metric the decision, both means, the paired delta with its
interval, the p-values and the tolerance; `history` reads them back beside a tag's runs, for
`harness history` and the report's history page. A `sequential_gates` row per
`harness gate --sequential` adds the document order's seed and a JSON summary per metric, and
`gate_traces` holds, per metric and look (after each chunk), the documents used, both e-values,
the running estimate and its anytime-valid interval, which the report draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from harness.store.db import Store
from harness.store.migrations import current_version

GATES_VERSION = 4  # the schema version that added the sequential tables
HISTORY_VERSION = 5  # ... and the one that added every gate's verdict
DECISION_KEYS = ("task", "metric", "status", "baseline", "candidate", "delta", "ci_low", "ci_high", "p_value",
                 "p_adjusted", "n", "tolerance", "reason")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def json_safe(value: object) -> object:
    """JSON has no infinity: an e-value that is infinite (the null ruled out) is written as the string 'inf'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_gate(store: Store, gate_id: str, baseline_run: str, candidate_run: str, seed: int, passed: bool,
              policy: dict, summary: dict, trace: Sequence[tuple]) -> None:
    """trace rows: (task, metric, look, docs_used, docs_available, e_pass, e_fail, estimate, ci_low, ci_high, decision)."""
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("INSERT INTO sequential_gates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [gate_id, datetime.now(UTC).replace(tzinfo=None), baseline_run, candidate_run, seed, passed,
                     json.dumps(json_safe(policy), sort_keys=True), json.dumps(json_safe(summary), sort_keys=True)])
        con.executemany("INSERT INTO gate_traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[gate_id, *row[:5], row[5], row[6], _finite(row[7]), _finite(row[8]), _finite(row[9]), row[10]]
                         for row in trace])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def gates(store: Store) -> list[dict]:
    """Every sequential gate, newest first (none in a database older than version 4)."""
    if current_version(store.con) < GATES_VERSION:
        return []
    rows = store.con.execute(
        """SELECT gate_id, strftime(created_at, '%Y-%m-%d %H:%M:%S'), baseline_run, candidate_run, seed, passed,
                  policy::VARCHAR, summary::VARCHAR FROM sequential_gates ORDER BY created_at DESC, gate_id"""
    ).fetchall()
    keys = ("gate_id", "created_at", "baseline_run", "candidate_run", "seed", "passed", "policy", "summary")
    out = []
    for row in rows:
        item = dict(zip(keys, row))
        item["policy"], item["summary"] = json.loads(item["policy"]), json.loads(item["summary"])
        out.append(item)
    return out


def trace(store: Store, gate_id: str) -> list[dict]:
    """The gate's trace rows, by task, metric and look."""
    rows = store.con.execute(
        """SELECT task, metric, look, docs_used, docs_available, e_pass, e_fail, estimate, ci_low, ci_high, decision
           FROM gate_traces WHERE gate_id = ? ORDER BY task, metric, look""", [gate_id]).fetchall()
    keys = ("task", "metric", "look", "docs_used", "docs_available", "e_pass", "e_fail", "estimate", "ci_low", "ci_high",
            "decision")
    return [dict(zip(keys, row)) for row in rows]


def new_gate_id() -> str:
    import uuid

    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def record_gate(store: Store, gate_id: str, kind: str, baseline_run: str, candidate_run: str, passed: bool,
                policy: dict, decisions: Sequence[dict]) -> None:
    """One verdict and its per-metric decisions (dicts with DECISION_KEYS), in one transaction."""
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("INSERT INTO gates VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [gate_id, datetime.now(UTC).replace(tzinfo=None), kind, baseline_run, candidate_run, passed,
                     json.dumps(json_safe(policy), sort_keys=True)])
        con.executemany("INSERT INTO gate_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[gate_id, *(_finite(d.get(k)) if k not in ("task", "metric", "status", "reason", "n")
                                     else d.get(k) for k in DECISION_KEYS)] for d in decisions])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def history(store: Store, tag: str, metric: str | None = None) -> list[dict]:
    """The complete runs with `tag`, oldest first, one row per (run, task, metric): the run's stored value with
    its interval, and the verdict of the latest gate that judged the run as its candidate (None if none).
    `metric` is "task/metric"; without it, the metrics that some gate of these runs judged (every metric of
    the runs when no gate judged any)."""
    if current_version(store.con) < HISTORY_VERSION:
        gated: set[tuple[str, str]] = set()
    else:
        gated = {(t, m) for t, m in store.con.execute(
            """SELECT DISTINCT d.task, d.metric FROM gate_decisions d JOIN gates g USING (gate_id)
               JOIN run_tags t ON t.run_id = g.candidate_run WHERE t.tag = ?""", [tag]).fetchall()}
    rows = store.con.execute(
        """SELECT r.run_id, strftime(r.created_at, '%Y-%m-%d %H:%M:%S'), r.model, m.task, m.metric, m.value,
                  m.ci_low, m.ci_high, m.n
           FROM runs r JOIN run_tags t USING (run_id) JOIN metrics m USING (run_id)
           WHERE t.tag = ? AND r.status = 'complete' ORDER BY r.created_at, r.run_id, m.task, m.metric""",
        [tag]).fetchall()
    keys = ("run_id", "created_at", "model", "task", "metric", "value", "ci_low", "ci_high", "n")
    out = [dict(zip(keys, row)) for row in rows]
    if metric is not None:
        task, _, name = metric.partition("/")
        out = [r for r in out if r["task"] == task and r["metric"] == name]
    elif gated:
        out = [r for r in out if (r["task"], r["metric"]) in gated]
    verdicts = _verdicts(store, [r["run_id"] for r in out]) if current_version(store.con) >= HISTORY_VERSION else {}
    for r in out:
        gate = verdicts.get(r["run_id"])
        r["gate_id"] = gate["gate_id"] if gate else None
        r["gate_passed"] = gate["passed"] if gate else None
        r["gate_kind"] = gate["kind"] if gate else None
        r["decision"] = gate["decisions"].get((r["task"], r["metric"])) if gate else None
    return out


def _verdicts(store: Store, run_ids: list[str]) -> dict[str, dict]:
    """run id -> its latest gate as candidate: id, kind, verdict, and per (task, metric) the status."""
    if not run_ids:
        return {}
    gates_rows = store.con.execute(
        """SELECT candidate_run, gate_id, kind, passed FROM gates WHERE list_contains(?, candidate_run)
           QUALIFY row_number() OVER (PARTITION BY candidate_run ORDER BY created_at DESC, gate_id DESC) = 1""",
        [sorted(set(run_ids))]).fetchall()
    out = {run: {"gate_id": gid, "kind": kind, "passed": bool(passed), "decisions": {}} for run, gid, kind, passed in gates_rows}
    by_gate = {v["gate_id"]: v for v in out.values()}
    if by_gate:
        for gid, task, metric, status in store.con.execute(
                "SELECT gate_id, task, metric, status FROM gate_decisions WHERE list_contains(?, gate_id)",
                [sorted(by_gate)]).fetchall():
            by_gate[gid]["decisions"][(task, metric)] = status
    return out
