"""Publish gate verdicts and recipe checkpoints to MLflow, read back from the DuckDB store.

A gate is its own MLflow run, nested (MLflow's `mlflow.parentRunId` tag) under the candidate's MLflow
run when that run was logged to the same experiment: gating the same candidate twice, under another
policy or baseline, then adds a second verdict beside the first instead of overwriting the
candidate's metrics, and the evaluation's own record stays what the evaluation measured.

A recipe is one MLflow run; every checkpoint it reports on is an MLflow logged model (external: the
weights stay in the harness artifact store) whose tags name its parent's artifact id and logged
model id, with the edge report's headline numbers as the model's metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.recipe.view import accuracy_delta, gate_word
from harness.report.mlflow_tracking import MlflowTarget, client, experiment_id, find_run, finite, key, load_mlflow, log_batch, param_value
from harness.store import lineage
from harness.store.db import Store

DECISION_COLUMNS = ("task", "metric", "status", "baseline", "candidate", "delta", "ci_low", "ci_high", "p_value",
                    "p_adjusted", "n", "tolerance", "reason")


def stored_gate(store: Store, gate_id: str) -> tuple[dict, list[dict]]:
    """The gate row and its per-metric decisions, as `harness gate` stored them."""
    cursor = store.con.execute("SELECT gate_id, kind, baseline_run, candidate_run, passed, policy::VARCHAR AS policy, "
                               "strftime(created_at, '%Y-%m-%d %H:%M:%S') AS created_at FROM gates WHERE gate_id = ?", [gate_id])
    row = cursor.fetchone()
    if row is None:
        raise ValueError(f"no gate {gate_id} in {store.path}")
    gate = dict(zip([d[0] for d in cursor.description], row))
    decisions = [dict(zip(DECISION_COLUMNS, r)) for r in store.con.execute(
        f"SELECT {', '.join(DECISION_COLUMNS)} FROM gate_decisions WHERE gate_id = ? ORDER BY task, metric", [gate_id]).fetchall()]
    return gate, decisions


def gate_metrics(gate: dict, decisions: list[dict]) -> dict[str, float]:
    """`gate/passed` (1 or 0), and per decision `task/metric_delta`, `_ci_low`, `_ci_high`, `_p_adjusted`, `_passed`."""
    out = {"gate/passed": 1.0 if gate["passed"] else 0.0}
    for d in decisions:
        out[key(d["task"], f"{d['metric']}_passed")] = 1.0 if d["status"].startswith("pass") else 0.0
        for column in ("delta", "ci_low", "ci_high", "p_value", "p_adjusted", "tolerance"):
            value = finite(d[column])
            if value is not None:
                out[key(d["task"], f"{d['metric']}_{column}")] = value
    return out


def log_gate(target: MlflowTarget, store_path: Path, gate_id: str, summary_markdown: str) -> str:
    """The stored verdict as an MLflow run (its id returned): decisions as metrics and tags, the markdown
    the command printed and the decision rows as artifacts."""
    store = Store(store_path, read_only=True)
    try:
        gate, decisions = stored_gate(store, gate_id)
    finally:
        store.close()
    mlflow_client = client(target)
    experiment = experiment_id(mlflow_client, target)
    tags = {"harness.gate_id": gate_id, "harness.gate_kind": gate["kind"], "harness.gate_passed": str(bool(gate["passed"])).lower(),
            "harness.baseline_run_id": gate["baseline_run"], "harness.candidate_run_id": gate["candidate_run"]}
    tags |= {key("harness.decision", d["task"], d["metric"]): d["status"] for d in decisions}
    parent = find_run(mlflow_client, experiment, gate["candidate_run"])
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = mlflow_client.create_run(experiment, run_name=f"gate {gate_id}", tags={"harness.gate_id": gate_id})
    run_id = run.info.run_id
    try:
        params = {"kind": gate["kind"], "baseline_run": gate["baseline_run"], "candidate_run": gate["candidate_run"],
                  "policy": param_value(gate["policy"])}
        log_batch(mlflow_client, run_id, params, gate_metrics(gate, decisions), tags)
        mlflow_client.log_text(run_id, summary_markdown, "gate.md")
        mlflow_client.log_text(run_id, json.dumps({"gate": gate, "decisions": decisions}, indent=2, default=str), "gate.json")
    except BaseException:
        mlflow_client.set_terminated(run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run_id, "FINISHED")
    return str(run_id)


# ---- recipes -----------------------------------------------------------------------------------


def checkpoint_params(row: dict, edge: dict | None) -> dict[str, str]:
    """A checkpoint's record: format, size, bits per weight, and how it was made (step, kind, its parameters)."""
    params: dict[str, Any] = {k: row.get(k) for k in ("format", "bytes", "parameters", "bits_per_weight", "model_fingerprint")}
    if edge is not None:
        params |= {k: edge.get(k) for k in ("relation", "step", "step_kind", "data_fingerprint", "seed")}
        params |= {key("step_params", k): v for k, v in sorted((edge.get("params") or {}).items())}
    return {k: param_value(v) for k, v in params.items() if v is not None}


def edge_metrics(report: dict | None) -> dict[str, float]:
    """The edge report's headline numbers: accuracy delta (points), gate (1 pass / 0 fail), fidelity, size."""
    report = report or {}
    fid, size = report.get("fidelity") or {}, report.get("size") or {}
    values = {"accuracy_delta_points": accuracy_delta(report), "kld_mean": fid.get("kld_mean"),
              "same_top_pct": fid.get("same_top_pct"), "ln_ppl_ratio": fid.get("ln_ppl_ratio"),
              "bits_per_weight": size.get("child_bits_per_weight")}
    word = gate_word(report)
    if word in ("pass", "FAIL"):
        values["gate_passed"] = 1.0 if word == "pass" else 0.0
    return {k: f for k, v in values.items() if (f := finite(v)) is not None}


def _ordered(edges: list[tuple[str, str]]) -> list[str]:
    """Artifact ids, every parent before its children (edges arrive root first, as the recipe made them)."""
    return list(dict.fromkeys(i for edge in edges for i in edge))


def log_recipe(target: MlflowTarget, store_path: Path, recipe_id: str, edges: list[tuple[str, str]],
               names: dict[str, str]) -> dict[str, str]:
    """The recipe as an MLflow run and each checkpoint as a logged model linked to its parent; returns
    artifact id -> logged model id. `names`: artifact id -> the recipe's node name (parent, step names)."""
    store = Store(store_path, read_only=True)
    try:
        ids = _ordered(edges)
        rows = {i: lineage.artifact_row(store, i) or {"artifact_id": i} for i in ids}
        parents = {child: parent for parent, child in edges}
        edge_rows = {c: lineage.parent_edge(store, c) for c in parents}
        reports = {c: next((r for r in lineage.edge_reports(store, c, p) if r["recipe_id"] == recipe_id), None)
                   for c, p in parents.items()}
    finally:
        store.close()
    mlflow = load_mlflow()
    mlflow_client = client(target)
    experiment = experiment_id(mlflow_client, target)
    run = mlflow_client.create_run(experiment, run_name=f"recipe {recipe_id}", tags={"harness.recipe_id": recipe_id})
    if target.uri:
        mlflow.set_tracking_uri(target.uri)  # create_external_model has no client form
    models: dict[str, str] = {}
    try:
        for artifact_id in ids:
            parent = parents.get(artifact_id)
            tags = {"harness.artifact_id": artifact_id, "harness.recipe_id": recipe_id,
                    "harness.model_spec": str(rows[artifact_id].get("model_spec") or "")}
            if parent is not None:
                tags |= {"harness.parent_artifact_id": parent, "harness.parent_model_id": models[parent]}
            model = mlflow.create_external_model(
                name=key(names.get(artifact_id, "checkpoint"), artifact_id[:12]).replace("/", "-"),
                source_run_id=run.info.run_id, experiment_id=experiment, model_type="harness-checkpoint",
                params=checkpoint_params(rows[artifact_id], edge_rows.get(artifact_id)), tags=tags)
            models[artifact_id] = model.model_id
            # named per checkpoint: the recipe's run holds every child's numbers side by side
            metrics = {key(names.get(artifact_id, artifact_id[:12]), k): v
                       for k, v in edge_metrics(reports.get(artifact_id)).items()} if parent is not None else {}
            if metrics:
                mlflow.log_metrics(metrics, run_id=run.info.run_id, model_id=model.model_id)
        log_batch(mlflow_client, run.info.run_id, {"recipe_id": recipe_id, "checkpoints": str(len(ids))}, {},
                  {key("harness.model_id", names.get(i, i[:12])): m for i, m in models.items()})
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return models
