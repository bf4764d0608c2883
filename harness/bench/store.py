"""Bench tables in the results database (schema version 2, harness/store/migrations.py).

- bench_runs: one row per `harness bench`; 'running' until every level is in, then 'complete'
  (or 'failed'), so an interrupted benchmark never looks finished.
- bench_levels: one row per load level with the throughput figures and the full summary JSON.
- bench_level_stats: mean/std/percentiles of ttft_ms, tpot_ms, itl_ms, e2e_ms per level.
- bench_requests: every request's timeline, warm-up included (flagged): milliseconds from the
  level's first send, so `first_token_ms - send_ms` is the TTFT; `token_ms` has one entry per
  content token.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd

from harness.bench.metrics import LevelSummary, Timeline
from harness.store.db import Store

STAT_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def create_bench(store: Store, bench_id: str, fields: dict, tags: list[str]) -> None:
    store.con.execute(
        """INSERT INTO bench_runs (bench_id, status, created_at, target, model, backend, api, dataset, input_len,
                                   output_len, num_prompts, duration_s, warmup, ignore_eos, seed, slo,
                                   gpu_cost_per_hour, tokenizer, config, metadata)
           VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [bench_id, _now(), fields["target"], fields["model"], fields["backend"], fields.get("api"), fields["dataset"],
         fields.get("input_len"), fields.get("output_len"), fields.get("num_prompts"), fields.get("duration_s"),
         fields.get("warmup"), fields.get("ignore_eos"), fields.get("seed"), json.dumps(fields.get("slo") or {}),
         fields.get("gpu_cost_per_hour"), fields.get("tokenizer"), json.dumps(fields.get("config") or {}),
         json.dumps(fields.get("metadata") or {}, default=str)],
    )
    for tag in tags:
        store.con.execute("INSERT OR IGNORE INTO bench_run_tags VALUES (?, ?)", [bench_id, tag])


def finish_bench(store: Store, bench_id: str, status: str, token_count_source: str | None = None) -> None:
    store.con.execute("UPDATE bench_runs SET status = ?, finished_at = ?, token_count_source = ? WHERE bench_id = ?",
                      [status, _now(), token_count_source, bench_id])


def timeline_frame(bench_id: str, level: int, timelines: list[Timeline]) -> pd.DataFrame:
    origin = min((t.send_ns for t in timelines), default=0)

    def ms(ns: int) -> float:
        return (ns - origin) / 1e6

    return pd.DataFrame({
        "bench_id": bench_id,
        "level": level,
        "request_index": [t.index for t in timelines],
        "warmup": [t.warmup for t in timelines],
        "request_id": [t.request_id for t in timelines],
        "send_ms": [ms(t.send_ns) for t in timelines],
        "first_token_ms": [ms(t.token_ns[0]) if t.token_ns else None for t in timelines],
        "end_ms": [ms(t.end_ns) for t in timelines],
        "token_ms": [[ms(x) for x in t.token_ns] for t in timelines],
        "input_tokens": pd.array([t.input_tokens for t in timelines], dtype="Int64"),
        "output_tokens": pd.array([t.output_tokens if t.ok else (len(t.token_ns) or None) for t in timelines], dtype="Int64"),
        "token_source": [t.token_source for t in timelines],
        "error": [t.error for t in timelines],
    })


def write_level(store: Store, bench_id: str, level: int, summary: LevelSummary, timelines: list[Timeline],
                started_at: datetime) -> None:
    """One level: its row, its statistics and every request, in one transaction."""
    con = store.con
    s = summary
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """INSERT OR REPLACE INTO bench_levels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [bench_id, level, s.concurrency, s.rate, s.burstiness, started_at, s.requests, s.completed, s.failed,
             s.duration_s, s.input_tokens, s.output_tokens, s.output_tokens_per_s, s.total_tokens_per_s, s.requests_per_s,
             s.goodput_requests_per_s, s.slo_attainment, s.cost_per_million_output_tokens, s.peak_memory_mb,
             s.token_source, json.dumps(s.as_json())],
        )
        for name in STAT_METRICS:
            st = getattr(s, name)
            con.execute("INSERT OR REPLACE INTO bench_level_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [bench_id, level, name, st.mean, st.std, st.p50, st.p90, st.p95, st.p99, st.n])
        frame = timeline_frame(bench_id, level, timelines)
        con.register("new_bench_requests", frame)
        try:
            con.execute("""INSERT OR REPLACE INTO bench_requests
                           SELECT bench_id, level, request_index, warmup, request_id, send_ms, first_token_ms, end_ms,
                                  token_ms::DOUBLE[], input_tokens, output_tokens, token_source, error
                           FROM new_bench_requests""")
        finally:
            con.unregister("new_bench_requests")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def has_bench_tables(store: Store) -> bool:
    """False for a database still at schema version 1 (opened read-only, it is not migrated)."""
    row = store.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'bench_runs'").fetchone()
    return bool(row and row[0])


def bench_runs(store: Store) -> pd.DataFrame:
    if not has_bench_tables(store):
        return pd.DataFrame()
    return store.con.execute(
        """SELECT b.*, (SELECT string_agg(tag, ',' ORDER BY tag) FROM bench_run_tags t WHERE t.bench_id = b.bench_id) AS tags,
                  (SELECT count(*) FROM bench_levels l WHERE l.bench_id = b.bench_id) AS n_levels
           FROM bench_runs b ORDER BY created_at DESC, bench_id""").df()


def bench_levels(store: Store, bench_id: str) -> pd.DataFrame:
    return store.con.execute("SELECT * FROM bench_levels WHERE bench_id = ? ORDER BY level", [bench_id]).df()


def bench_stats(store: Store, bench_id: str) -> pd.DataFrame:
    return store.con.execute("SELECT * FROM bench_level_stats WHERE bench_id = ? ORDER BY level, metric", [bench_id]).df()


def level_samples(store: Store, bench_id: str, level: int, limit: int = 20000) -> tuple[list[float], list[float]]:
    """(TTFT values, ITL values) in ms of the measured, successful requests of one level, for histograms."""
    con = store.con
    ttft = [r[0] for r in con.execute(
        """SELECT first_token_ms - send_ms FROM bench_requests WHERE bench_id = ? AND level = ? AND NOT warmup
           AND error IS NULL AND first_token_ms IS NOT NULL LIMIT ?""", [bench_id, level, limit]).fetchall()]
    itl = [r[0] for r in con.execute(
        """SELECT g FROM (SELECT unnest(list_transform(range(2, len(token_ms) + 1), lambda i: token_ms[i] - token_ms[i - 1])) AS g
                          FROM bench_requests WHERE bench_id = ? AND level = ? AND NOT warmup AND error IS NULL)
           LIMIT ?""", [bench_id, level, limit]).fetchall()]
    return ttft, itl
