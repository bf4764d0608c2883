"""Schema versions of the results database and the path from each to the next.

A new version appends a list of statements to MIGRATIONS; `migrate` applies the missing ones
in order inside one transaction, so a database is always at exactly one known version.
"""

from __future__ import annotations

import duckdb

from harness.errors import UsageError

MIGRATIONS: list[list[str]] = [
    # version 1
    [
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            status VARCHAR NOT NULL,            -- running | complete | failed
            created_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            config_hash VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            model_fingerprint VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            backend_args JSON,
            suite VARCHAR,
            tasks JSON,
            num_fewshot INTEGER,
            limit_docs INTEGER,
            seed INTEGER,
            metadata JSON
        )""",
        "CREATE TABLE run_tags (run_id VARCHAR NOT NULL, tag VARCHAR NOT NULL, PRIMARY KEY (run_id, tag))",
        """CREATE TABLE run_tasks (
            run_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            task_version VARCHAR,
            num_fewshot INTEGER,
            data_source VARCHAR,
            dataset_fingerprint VARCHAR,
            n_docs INTEGER,
            prompts_hash VARCHAR,
            PRIMARY KEY (run_id, task)
        )""",
        """CREATE TABLE samples (
            run_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            doc_id INTEGER NOT NULL,
            doc_hash VARCHAR NOT NULL,
            prompt_hash VARCHAR NOT NULL,
            target_hash VARCHAR NOT NULL,
            prompt VARCHAR,
            target VARCHAR,
            response JSON,
            extracted VARCHAR,
            metrics JSON,
            loglikelihoods DOUBLE[],
            PRIMARY KEY (run_id, task, doc_id)
        )""",
        """CREATE TABLE metrics (
            run_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE,
            stderr DOUBLE,
            ci_low DOUBLE,
            ci_high DOUBLE,
            n INTEGER,
            PRIMARY KEY (run_id, task, metric)
        )""",
        """CREATE TABLE cache (
            model_fingerprint VARCHAR NOT NULL,
            request_hash VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            response JSON NOT NULL,
            created_at TIMESTAMP,
            PRIMARY KEY (model_fingerprint, request_hash)
        )""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return int(version or 0)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise UsageError(f"database schema version {version} is newer than this harness ({SCHEMA_VERSION}); upgrade harness")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in MIGRATIONS[target - 1]:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?)", [target])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION
