"""Sequential gates and their traces in the results database (schema version 4).

A `sequential_gates` row per `harness gate --sequential`: the runs compared, the document order's
seed, the policy, the verdict and a JSON summary per metric; `gate_traces` holds, per metric and
look (after each chunk), the documents used, both e-values, the running estimate and its
anytime-valid interval, which the report draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from harness.store.db import Store
from harness.store.migrations import current_version

GATES_VERSION = 4  # the schema version that added these tables


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
