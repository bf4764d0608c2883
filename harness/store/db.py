"""The results store: one DuckDB file holding runs, samples, metrics and the request cache.

A run row is written first with status 'running' and turns 'complete' only after every sample
and metric is in, so a killed run never looks finished.

Readers during a run: DuckDB lets another process open a file (even read-only) only while no
process holds it open for writing. So a writer holds the file only while it writes: the
scheduler calls `release()` after each batch it stores, and the next use reopens it. Every open
waits, bounded (HARNESS_DB_WAIT_S, default 60 s), while another harness process holds the lock:
`harness runs`, `show`, `report` and `compare` read between a run's batches, and a second
`harness run` on the same file takes turns with the first (writes serialised by the lock). Samples are keyed by
(run_id, task, doc_id) and inserted with INSERT OR IGNORE, so a resumed run cannot duplicate
them. The cache is keyed by model fingerprint + request hash (the hash covers generation
settings), never by request alone.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from harness.core.errors import UsageError
from harness.store.migrations import check_schema, migrate

DEFAULT_WAIT_S = 60.0


def wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("HARNESS_DB_WAIT_S", DEFAULT_WAIT_S)))
    except ValueError:
        raise UsageError(f"HARNESS_DB_WAIT_S={os.environ['HARNESS_DB_WAIT_S']!r}: expected seconds") from None


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


_CONNECTING = threading.Lock()


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection, waiting (bounded, with backoff) while another process holds the file's lock."""
    deadline = time.monotonic() + wait_seconds()
    delay = 0.02
    while True:
        try:
            with _CONNECTING:  # two threads opening one file at once race in DuckDB's instance cache
                return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _locked(exc):
                raise
            if time.monotonic() >= deadline:
                raise UsageError(f"database {path} is in use by another process (waited {wait_seconds():g} s; "
                                 "HARNESS_DB_WAIT_S sets how long)") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def default_db_path() -> Path:
    return Path(os.environ.get("HARNESS_DB", "results/harness.duckdb"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class SampleRow:
    task: str
    doc_id: int
    doc_hash: str
    prompt_hash: str
    target_hash: str
    prompt: str
    target: str
    response: object
    extracted: str | None
    metrics: dict[str, float]
    loglikelihoods: list[float] | None


@dataclass(frozen=True)
class MetricRow:
    task: str
    metric: str
    value: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class Store:
    """A harness results database. Opening never modifies a file that is not one (check_schema)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        if read_only:
            if not (path.exists() or path.is_symlink()):
                raise UsageError(f"no results database at {path} (run `harness run` first, or pass --db)")
            if path.is_file() and path.stat().st_size == 0:
                raise UsageError(f"no results database at {path} (the file is empty)")
        if path.is_dir():
            raise UsageError(f"cannot open database {path}: it is a directory")
        try:
            if not read_only:
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                elif path.is_file() and path.stat().st_size == 0:
                    path.unlink()  # an empty file (mktemp) is a new database; DuckDB refuses to open one
            self._con = connect(path, read_only)
        except (OSError, duckdb.Error) as exc:
            raise UsageError(f"cannot open database {path}: {_first_line(exc)}") from None
        try:
            if read_only:
                check_schema(self.con, str(path))
            else:
                migrate(self.con, str(path))
        except UsageError:
            self.release()
            raise
        except duckdb.Error as exc:
            self.release()
            raise UsageError(f"cannot {'read' if read_only else 'migrate'} database {path}: {_first_line(exc)}") from None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection, reopened after a `release()` (the schema was checked at the first open)."""
        if self._con is None:
            try:
                self._con = connect(self.path, self.read_only)
            except (OSError, duckdb.Error) as exc:
                raise UsageError(f"cannot open database {self.path}: {_first_line(exc)}") from None
        return self._con

    def release(self) -> None:
        """Let other processes in: close the file until the next use (a writer between batches)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        self.release()

    # ---- runs -------------------------------------------------------------------------------

    def resumable_run(self, config_hash: str) -> str | None:
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE config_hash = ? AND status IN ('running', 'failed') ORDER BY created_at DESC LIMIT 1",
            [config_hash],
        ).fetchone()
        return row[0] if row else None

    def create_run(self, run_id: str, config_hash: str, fields: dict, tags: Sequence[str]) -> None:
        self.con.execute(
            """INSERT INTO runs (run_id, status, created_at, config_hash, model, model_fingerprint, backend,
                                 backend_args, suite, tasks, num_fewshot, limit_docs, seed, metadata)
               VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [run_id, _now(), config_hash, fields["model"], fields["model_fingerprint"], fields["backend"],
             json.dumps(fields["backend_args"]), fields.get("suite"), json.dumps(fields["tasks"]),
             fields.get("num_fewshot"), fields.get("limit"), fields.get("seed"), json.dumps(fields.get("metadata", {}))],
        )
        self.add_tags(run_id, tags)

    def add_tags(self, run_id: str, tags: Iterable[str]) -> None:
        for tag in tags:
            self.con.execute("INSERT OR IGNORE INTO run_tags VALUES (?, ?)", [run_id, tag])

    def set_status(self, run_id: str, status: str, metadata: dict | None = None) -> None:
        finished = _now() if status in ("complete", "partial") else None
        if metadata is None:
            self.con.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, finished, run_id])
        else:
            self.con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, metadata = ? WHERE run_id = ?",
                [status, finished, json.dumps(metadata), run_id],
            )

    def record_task(self, run_id: str, row: dict) -> None:
        self.con.execute(
            """INSERT OR REPLACE INTO run_tasks (run_id, task, task_version, num_fewshot, data_source,
                                                 dataset_fingerprint, n_docs, prompts_hash)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [run_id, row["task"], row["version"], row["num_fewshot"], row["source"], row["fingerprint"],
             row["n_docs"], row["prompts_hash"]],
        )

    def resolve_run(self, ref: str) -> str:
        """A run id, else a unique prefix of one, else a tag (the latest complete run with it).

        Matching is literal (no wildcards: `%` and `_` are characters like any other). An exact id
        wins over a prefix of a longer id, and a prefix (unique or ambiguous) over a tag.
        """
        if not ref.strip():
            raise UsageError("the run reference is empty (give a run id, a prefix of one, or a tag)")
        if self.con.execute("SELECT 1 FROM runs WHERE run_id = ?", [ref]).fetchone():
            return ref
        rows = self.con.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [ref]).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if len(rows) > 1:
            ids = [r[0] for r in rows]
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            raise UsageError(f"run id prefix {ref!r} is ambiguous ({len(ids)} runs: {shown}); give more of the id")
        tagged = self.con.execute(
            """SELECT r.run_id, r.status FROM runs r JOIN run_tags t USING (run_id)
               WHERE t.tag = ? ORDER BY r.status = 'complete' DESC, r.created_at DESC""",
            [ref],
        ).fetchall()
        if not tagged:
            raise UsageError(f"no run or tag {ref!r} in {self.path}")
        run_id, status = tagged[0]
        if status != "complete":
            raise UsageError(f"tag {ref!r} has no complete run (latest: {run_id}, status {status}); give the run id")
        return str(run_id)

    # ---- samples and metrics ----------------------------------------------------------------

    def done_docs(self, run_id: str, task: str) -> set[int]:
        rows = self.con.execute("SELECT doc_id FROM samples WHERE run_id = ? AND task = ?", [run_id, task]).fetchall()
        return {r[0] for r in rows}

    def insert_samples(self, run_id: str, rows: Sequence[SampleRow]) -> None:
        if not rows:
            return
        frame = pd.DataFrame(
            {
                "run_id": run_id,
                "task": [r.task for r in rows],
                "doc_id": [r.doc_id for r in rows],
                "doc_hash": [r.doc_hash for r in rows],
                "prompt_hash": [r.prompt_hash for r in rows],
                "target_hash": [r.target_hash for r in rows],
                "prompt": [r.prompt for r in rows],
                "target": [r.target for r in rows],
                "response": [json.dumps(r.response) for r in rows],
                "extracted": [r.extracted for r in rows],
                "metrics": [json.dumps(r.metrics) for r in rows],
                "loglikelihoods": [r.loglikelihoods for r in rows],
            }
        )
        self.con.register("new_samples", frame)
        try:
            self.con.execute(
                """INSERT OR IGNORE INTO samples SELECT run_id, task, doc_id, doc_hash, prompt_hash, target_hash,
                          prompt, target, response::JSON, extracted, metrics::JSON, loglikelihoods::DOUBLE[] FROM new_samples"""
            )
        finally:
            self.con.unregister("new_samples")

    def sample_metrics(self, run_id: str, task: str) -> pd.DataFrame:
        return self.con.execute(
            "SELECT doc_id, metrics FROM samples WHERE run_id = ? AND task = ? ORDER BY doc_id", [run_id, task]
        ).df()

    def write_metrics(self, run_id: str, rows: Sequence[MetricRow]) -> None:
        self.con.execute("DELETE FROM metrics WHERE run_id = ?", [run_id])
        for r in rows:
            self.con.execute(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, r.task, r.metric, r.value, r.stderr, r.ci_low, r.ci_high, r.n],
            )

    def metrics(self, run_id: str) -> pd.DataFrame:
        return self.con.execute(
            "SELECT task, metric, value, stderr, ci_low, ci_high, n FROM metrics WHERE run_id = ? ORDER BY task, metric",
            [run_id],
        ).df()

    def run(self, run_id: str) -> dict:
        frame = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
        if frame.empty:
            raise UsageError(f"no run {run_id!r}")
        row = frame.iloc[0].to_dict()
        row["tags"] = [t for (t,) in self.con.execute("SELECT tag FROM run_tags WHERE run_id = ? ORDER BY tag", [run_id]).fetchall()]
        row["task_rows"] = self.con.execute("SELECT * FROM run_tasks WHERE run_id = ? ORDER BY task", [run_id]).df()
        return row

    def runs(self, tag: str | None = None, model: str | None = None, task: str | None = None) -> pd.DataFrame:
        return self.con.execute(
            """SELECT r.run_id, r.created_at, r.status, r.model, r.suite,
                      (SELECT string_agg(tag, ',' ORDER BY tag) FROM run_tags t WHERE t.run_id = r.run_id) AS tags,
                      (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id) AS samples
               FROM runs r
               WHERE (? IS NULL OR EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id AND t.tag = ?))
                 AND (? IS NULL OR r.model LIKE '%' || ? || '%')
                 AND (? IS NULL OR EXISTS (SELECT 1 FROM run_tasks k WHERE k.run_id = r.run_id AND k.task = ?))
               ORDER BY r.created_at""",
            [tag, tag, model, model, task, task],
        ).df()

    # ---- request cache ----------------------------------------------------------------------

    def cache_get(self, model_fingerprint: str, hashes: Sequence[str]) -> dict[str, object]:
        if not hashes:
            return {}
        wanted = pd.DataFrame({"request_hash": list(hashes)})
        self.con.register("wanted_hashes", wanted)
        try:
            rows = self.con.execute(
                """SELECT c.request_hash, c.response FROM cache c JOIN wanted_hashes w USING (request_hash)
                   WHERE c.model_fingerprint = ?""",
                [model_fingerprint],
            ).fetchall()
        finally:
            self.con.unregister("wanted_hashes")
        return {h: json.loads(value) for h, value in rows}

    def cache_put(self, model_fingerprint: str, entries: Sequence[tuple[str, str, object]]) -> None:
        """entries: (request_hash, kind, JSON-serialisable response)."""
        if not entries:
            return
        frame = pd.DataFrame(
            {
                "model_fingerprint": model_fingerprint,
                "request_hash": [e[0] for e in entries],
                "kind": [e[1] for e in entries],
                "response": [json.dumps(e[2]) for e in entries],
                "created_at": _now(),
            }
        )
        self.con.register("new_cache", frame)
        try:
            self.con.execute(
                "INSERT OR IGNORE INTO cache SELECT model_fingerprint, request_hash, kind, response::JSON, created_at FROM new_cache"
            )
        finally:
            self.con.unregister("new_cache")
