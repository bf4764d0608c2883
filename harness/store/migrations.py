"""Schema versions of the results database and the path from each to the next.

A new version appends a list of statements to MIGRATIONS; `migrate` applies the missing ones
in order inside one transaction, so a database is always at exactly one known version.
"""

from __future__ import annotations

import duckdb

from harness.core.errors import UsageError
from harness.store.sql import scalar

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
    # version 2: serving benchmarks (harness bench; see harness/bench/store.py)
    [
        """CREATE TABLE bench_runs (
            bench_id VARCHAR PRIMARY KEY,
            status VARCHAR NOT NULL,            -- running | complete | failed
            created_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            target VARCHAR NOT NULL,            -- endpoint URL or in-process model spec
            model VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,           -- openai-http | hf | gguf | vllm
            api VARCHAR,
            dataset VARCHAR NOT NULL,
            input_len INTEGER,
            output_len INTEGER,
            num_prompts INTEGER,
            duration_s DOUBLE,
            warmup INTEGER,
            ignore_eos BOOLEAN,
            seed INTEGER,
            slo JSON,
            gpu_cost_per_hour DOUBLE,
            tokenizer VARCHAR,
            token_count_source VARCHAR,         -- usage | tokenizer | chunks | engine | mixed(...)
            config JSON,
            metadata JSON
        )""",
        "CREATE TABLE bench_run_tags (bench_id VARCHAR NOT NULL, tag VARCHAR NOT NULL, PRIMARY KEY (bench_id, tag))",
        """CREATE TABLE bench_levels (
            bench_id VARCHAR NOT NULL,
            level INTEGER NOT NULL,
            concurrency INTEGER,
            rate DOUBLE,
            burstiness DOUBLE,
            started_at TIMESTAMP,
            requests INTEGER,
            completed INTEGER,
            failed INTEGER,
            duration_s DOUBLE,
            input_tokens BIGINT,
            output_tokens BIGINT,
            output_tokens_per_s DOUBLE,
            total_tokens_per_s DOUBLE,
            requests_per_s DOUBLE,
            goodput_requests_per_s DOUBLE,
            slo_attainment DOUBLE,
            cost_per_million_output_tokens DOUBLE,
            peak_memory_mb DOUBLE,
            token_source VARCHAR,
            summary JSON,
            PRIMARY KEY (bench_id, level)
        )""",
        """CREATE TABLE bench_level_stats (
            bench_id VARCHAR NOT NULL,
            level INTEGER NOT NULL,
            metric VARCHAR NOT NULL,            -- ttft_ms | tpot_ms | itl_ms | e2e_ms
            mean DOUBLE,
            std DOUBLE,
            p50 DOUBLE,
            p90 DOUBLE,
            p95 DOUBLE,
            p99 DOUBLE,
            n INTEGER,
            PRIMARY KEY (bench_id, level, metric)
        )""",
        """CREATE TABLE bench_requests (
            bench_id VARCHAR NOT NULL,
            level INTEGER NOT NULL,
            request_index INTEGER NOT NULL,
            warmup BOOLEAN NOT NULL,
            request_id VARCHAR,
            send_ms DOUBLE NOT NULL,            -- milliseconds from the level's first send
            first_token_ms DOUBLE,
            end_ms DOUBLE NOT NULL,
            token_ms DOUBLE[],                  -- every content token's arrival
            input_tokens INTEGER,
            output_tokens INTEGER,
            token_source VARCHAR,
            error VARCHAR,
            PRIMARY KEY (bench_id, level, warmup, request_index)
        )""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = scalar(con, "SELECT max(version) FROM schema_version")
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
