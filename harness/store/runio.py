"""Move a run between databases: one parquet file per table plus a small manifest.

Export writes the run's rows of runs, run_tags, run_tasks, samples and metrics with DuckDB's
COPY ... (FORMAT parquet). Import checks the manifest and refuses a run id that already exists,
then inserts every table in one transaction, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from harness.core.errors import UsageError
from harness.store.db import Store
from harness.store.migrations import SCHEMA_VERSION
from harness.store.sql import scalar

TABLES = ("runs", "run_tags", "run_tasks", "samples", "metrics")
MANIFEST = "manifest.json"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_run(store: Store, run_id: str, out_dir: Path) -> dict[str, int]:
    """Write DIR/<table>.parquet for the run and DIR/manifest.json; returns rows per table."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out_dir}: {exc.strerror}") from None
    counts = {}
    for table in TABLES:
        target = out_dir / f"{table}.parquet"
        store.con.execute(f"COPY (SELECT * FROM {table} WHERE run_id = {_quote(run_id)}) TO {_quote(str(target))} "
                          "(FORMAT parquet)")
        counts[table] = scalar(store.con, f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id])
    manifest = {"run_id": run_id, "schema_version": SCHEMA_VERSION, "tables": counts}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return counts


def import_run(store: Store, in_dir: Path) -> str:
    """Insert an exported run; returns its id."""
    manifest_path = in_dir / MANIFEST
    if not manifest_path.is_file():
        raise UsageError(f"{in_dir} is not an exported run (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
        run_id, version = str(manifest["run_id"]), int(manifest["schema_version"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{manifest_path}: malformed manifest") from None
    if version > SCHEMA_VERSION:
        raise UsageError(f"{in_dir} was exported with schema version {version}; this harness reads up to {SCHEMA_VERSION}")
    missing = [t for t in TABLES if not (in_dir / f"{t}.parquet").is_file()]
    if missing:
        raise UsageError(f"{in_dir}: missing {', '.join(t + '.parquet' for t in missing)}")
    if scalar(store.con, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
        raise UsageError(f"run {run_id} already exists in {store.path}")
    store.con.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            path = str(in_dir / f"{table}.parquet")
            ids = store.con.execute("SELECT DISTINCT run_id FROM read_parquet(?)", [path]).fetchall()
            if any(i != run_id for (i,) in ids):
                raise UsageError(f"{path} holds rows of another run than {run_id}")
            store.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [path])
        store.con.execute("COMMIT")
    except duckdb.Error as exc:
        store.con.execute("ROLLBACK")
        raise UsageError(f"cannot import {in_dir}: {str(exc).splitlines()[0]}") from None
    except Exception:
        store.con.execute("ROLLBACK")
        raise
    return run_id
