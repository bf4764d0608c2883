"""Schema versions of the results database and the path from each to the next.

A new version appends a list of statements to MIGRATIONS; `migrate` applies the missing ones
in order inside one transaction, so a database is always at exactly one known version.

Before anything is written, `check_schema` compares the file with what MIGRATIONS[:version]
create (built in an in-memory database): a database of another program, one of ours with other
columns, or one from a newer harness is refused and left byte-identical.
"""

from __future__ import annotations

import functools

import duckdb

from harness.core.errors import UsageError

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
    # version 3: checkpoints made by recipes and where they came from (harness/store/lineage.py)
    [
        """CREATE TABLE artifacts (
            artifact_id VARCHAR PRIMARY KEY,    -- sha256 over the files' names and contents
            format VARCHAR NOT NULL,            -- hf | hf-adapter | hf-torchao | gguf
            path VARCHAR NOT NULL,              -- $HARNESS_CACHE_DIR/artifacts/<artifact_id>
            model_spec VARCHAR NOT NULL,        -- what `harness run --model` is given for it
            model_fingerprint VARCHAR,          -- the backend fingerprint runs store (default args)
            bytes BIGINT NOT NULL,
            parameters BIGINT,
            bits_per_weight DOUBLE,
            metadata JSON,                      -- per-tensor types, loss curve, imported-from path
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE artifact_edges (
            child VARCHAR NOT NULL,
            parent VARCHAR NOT NULL,
            relation VARCHAR NOT NULL,          -- adapter | merge | finetune | quantized | converted | dequantized
            step_key VARCHAR,                   -- hash of the step's inputs: a finished step is not redone
            recipe_id VARCHAR,
            step VARCHAR,                       -- the step's name in the recipe
            step_kind VARCHAR,                  -- lora_sft | merge | export_gguf | quantize_gguf | ...
            params JSON,
            data_fingerprint VARCHAR,
            seed INTEGER,
            versions JSON,                      -- library versions that made the child
            wall_seconds DOUBLE,
            peak_memory_bytes BIGINT,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (child, parent)
        )""",
        """CREATE TABLE edge_reports (
            child VARCHAR NOT NULL,
            parent VARCHAR NOT NULL,
            recipe_id VARCHAR NOT NULL,
            report JSON NOT NULL,               -- runs compared, gate verdict, fidelity, size, speed
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (child, parent, recipe_id)
        )""",
    ],
    # version 4: sequential gates and their traces (harness/store/gates.py)
    [
        """CREATE TABLE sequential_gates (
            gate_id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            baseline_run VARCHAR NOT NULL,
            candidate_run VARCHAR NOT NULL,     -- the candidate's run, status 'partial' when it stopped early
            seed INTEGER NOT NULL,              -- the document order's seed
            passed BOOLEAN NOT NULL,
            policy JSON NOT NULL,
            summary JSON NOT NULL               -- per metric: decision, documents used, estimate, interval, e-values
        )""",
        """CREATE TABLE gate_traces (
            gate_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            look INTEGER NOT NULL,              -- 1, 2, ...: after each chunk
            docs_used INTEGER NOT NULL,
            docs_available INTEGER NOT NULL,
            e_pass DOUBLE NOT NULL,             -- running max of the capital against "regressed beyond tolerance"
            e_fail DOUBLE NOT NULL,             -- running max of the capital against "not regressed beyond tolerance"
            estimate DOUBLE,                    -- mean paired difference so far, metric scale, candidate - baseline
            ci_low DOUBLE,
            ci_high DOUBLE,                     -- its anytime-valid interval at the sequential alpha
            decision VARCHAR,                   -- pass | fail once decided
            PRIMARY KEY (gate_id, task, metric, look)
        )""",
    ],
    # version 5: every `harness gate` verdict, fixed or sequential (harness/store/gates.py), for the history
    [
        """CREATE TABLE gates (
            gate_id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            kind VARCHAR NOT NULL,              -- fixed | sequential
            baseline_run VARCHAR NOT NULL,
            candidate_run VARCHAR NOT NULL,
            passed BOOLEAN NOT NULL,
            policy JSON NOT NULL
        )""",
        """CREATE TABLE gate_decisions (
            gate_id VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            status VARCHAR NOT NULL,            -- pass | fail; sequential: pass | fail | pass-fallback | fail-fallback
            baseline DOUBLE,
            candidate DOUBLE,                   -- means over the paired documents
            delta DOUBLE,                       -- candidate - baseline, the metric's scale
            ci_low DOUBLE,
            ci_high DOUBLE,
            p_value DOUBLE,
            p_adjusted DOUBLE,
            n INTEGER,                          -- paired documents used
            tolerance DOUBLE,                   -- absolute points
            reason VARCHAR,
            PRIMARY KEY (gate_id, task, metric)
        )""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = "CREATE TABLE schema_version (version INTEGER NOT NULL)"

# (table, [(column, type), ...] in column order) of the main schema
Schema = dict[str, list[tuple[str, str]]]


def _tables(con: duckdb.DuckDBPyConnection) -> Schema:
    rows = con.execute(
        """SELECT c.table_name, c.column_name, c.data_type || CASE WHEN t.table_type = 'VIEW' THEN ' (view)' ELSE '' END
           FROM information_schema.columns c JOIN information_schema.tables t
             USING (table_catalog, table_schema, table_name)
           WHERE c.table_catalog = current_database() AND c.table_schema = 'main'
           ORDER BY c.table_name, c.ordinal_position"""
    ).fetchall()
    schema: Schema = {}
    for table, column, kind in rows:
        schema.setdefault(table, []).append((column, kind))
    return schema


def _other_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What the database holds besides main-schema tables: schemas, views, sequences, macros, types."""
    rows = con.execute(
        """SELECT 'schema ' || schema_name FROM duckdb_schemas() WHERE database_name = current_database() AND NOT internal
           UNION ALL SELECT 'table ' || schema_name || '.' || table_name FROM duckdb_tables()
             WHERE database_name = current_database() AND schema_name <> 'main'
           UNION ALL SELECT 'sequence ' || sequence_name FROM duckdb_sequences() WHERE database_name = current_database()
           UNION ALL SELECT 'macro ' || function_name FROM duckdb_functions() WHERE database_name = current_database() AND NOT internal
           UNION ALL SELECT 'type ' || type_name FROM duckdb_types() WHERE database_name = current_database() AND NOT internal
           ORDER BY 1"""
    ).fetchall()
    return [r[0] for r in rows]


@functools.lru_cache(maxsize=16)
def _expected(migrations: tuple[tuple[str, ...], ...]) -> Schema:
    con = duckdb.connect(":memory:")
    try:
        con.execute(VERSION_TABLE)
        for statements in migrations:
            for statement in statements:
                con.execute(statement)
        return _tables(con)
    finally:
        con.close()


def expected_schema(version: int) -> Schema:
    """The tables and columns a database at `version` has: MIGRATIONS[:version] applied to an empty one."""
    return _expected(tuple(tuple(m) for m in MIGRATIONS[:version]))


def _names(items: list[str], most: int = 5) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _columns(columns: list[tuple[str, str]]) -> str:
    return _names([f"{c} {t}" for c, t in columns], most=4)


def _difference(actual: list[tuple[str, str]], expected: list[tuple[str, str]]) -> str:
    have, want = dict(actual), dict(expected)
    parts = []
    if missing := [c for c in want if c not in have]:
        parts.append("no " + _names(missing))
    if extra := [c for c in have if c not in want]:
        parts.append("other columns " + _names(extra))
    if retyped := [f"{c} {have[c]}, not {want[c]}" for c in want if c in have and have[c] != want[c]]:
        parts.append(_names(retyped, most=3))
    return "; ".join(parts) or "its columns in another order"


def check_schema(con: duckdb.DuckDBPyConnection, where: str = "the database") -> int:
    """The schema version of a harness database, 0 for an empty one; UsageError for anything else.

    Only reads: a database that is not ours (tables of another program, ours with other columns) or
    one from a newer harness is refused before anything is written to it.
    """
    tables = _tables(con)
    others = _other_objects(con)

    def foreign(reason: str) -> UsageError:
        return UsageError(f"{where} is not a harness results database: {reason}")

    if "schema_version" not in tables:
        if not tables and not others:
            return 0
        raise foreign(f"it holds {_names([f'table {t}' for t in sorted(tables)] + others)} and no schema_version table")
    if tables["schema_version"] != expected_schema(0)["schema_version"]:
        raise foreign(f"its schema_version table has columns ({_columns(tables['schema_version'])})")
    versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    if not versions:
        if set(tables) == {"schema_version"} and not others:
            return 0  # created by an earlier harness whose first migration never finished
        held = [f"table {t}" for t in sorted(set(tables) - {"schema_version"})] + others
        raise foreign(f"its schema_version table is empty and it holds {_names(held)}")
    newest = versions[-1]
    if newest > SCHEMA_VERSION:
        raise UsageError(f"database {where} has schema version {newest}, newer than this harness ({SCHEMA_VERSION}); "
                         "upgrade harness")
    if versions != list(range(1, newest + 1)):
        raise foreign(f"its schema versions are {_names([str(v) for v in versions])}, not 1..{newest}")
    for table, columns in expected_schema(newest).items():
        if table not in tables:
            raise foreign(f"table {table} of schema version {newest} is missing")
        if tables[table] != columns:
            raise foreign(f"table {table} differs from schema version {newest} ({_difference(tables[table], columns)})")
    return newest


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of a harness database (0 if empty); reads only."""
    return check_schema(con)


def migrate(con: duckdb.DuckDBPyConnection, where: str = "the database") -> int:
    """Bring a harness database (or an empty one) to SCHEMA_VERSION in one transaction.

    The schema is checked first (check_schema), so a foreign or newer database is refused unchanged.
    """
    version = check_schema(con, where)
    if version == SCHEMA_VERSION:
        return SCHEMA_VERSION
    con.execute("BEGIN TRANSACTION")
    try:
        if "schema_version" not in _tables(con):
            con.execute(VERSION_TABLE)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?)", [target])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
