"""Readers during a run, and two runs on one database, with real processes.

The writer holds the DuckDB file only while it stores a batch (harness.store.db): `harness runs`
and `show` started while a run is in progress read it between batches, and a second `harness
run` on the same file takes turns with the first instead of failing on DuckDB's lock. The model
is a scripted OpenAI-compatible server that answers each request after 0.3 s, so the runs last a
few seconds without loading a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from harness.serve.scripted_judge import JudgeServer, Script
from tests.conftest import REPO, harness_cli

pytestmark = pytest.mark.slow
ANSWER_AFTER_S = 0.3


@pytest.fixture(scope="module")
def slow_model() -> JudgeServer:
    rules = {"model": "slow", "rules": [{"match": ".", "mode": "stall", "seconds": ANSWER_AFTER_S, "reply": "#### 7"}]}
    server = JudgeServer(Script.from_json(rules)).start()
    yield server
    server.stop()


def start_run(server: JudgeServer, db: Path, task: str, limit: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "--tasks", task, "--limit", str(limit), "--num-fewshot", "0",
                             "--model", f"openai:slow@{server.base_url}", "--model-args", "concurrency=1", "--db", str(db),
                             "--no-progress", "--json", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HARNESS_DATA_SOURCE="fixture", HARNESS_LOG_LEVEL="WARNING"))


def test_readers_see_a_run_in_progress(tmp_path: Path, slow_model: JudgeServer) -> None:
    db = tmp_path / "results.duckdb"
    writer = start_run(slow_model, db, "gsm8k", 16, tmp_path / "run.json")  # about 5 s of answers
    seen_running, reads = 0, 0
    try:
        deadline = time.monotonic() + 120
        while writer.poll() is None and time.monotonic() < deadline:
            if not db.exists():
                time.sleep(0.2)
                continue
            runs = harness_cli("runs", "--db", str(db), timeout=120)
            assert runs.returncode == 0, runs.stderr  # never DuckDB's lock message
            reads += 1
            seen_running += "running" in runs.stdout
            shown = harness_cli("show", "gsm8k", "--db", str(db), timeout=120) if "running" in runs.stdout else None
            if shown is not None:
                assert shown.returncode in (0, 2), shown.stderr  # 2: a tag lookup finds no complete run yet
                assert "Traceback" not in shown.stderr and "lock" not in shown.stderr.lower()
        _, stderr = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, stderr
    assert reads >= 2 and seen_running >= 1, (reads, seen_running)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT status FROM runs").fetchall() == [("complete",)]
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (16,)
    finally:
        con.close()


def test_two_runs_on_one_database_take_turns(tmp_path: Path, slow_model: JudgeServer) -> None:
    db = tmp_path / "results.duckdb"
    first = start_run(slow_model, db, "gsm8k", 10, tmp_path / "a.json")
    time.sleep(1.0)
    second = start_run(slow_model, db, "gsm8k_cot", 10, tmp_path / "b.json")
    results = [p.communicate(timeout=180) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), [err for _, err in results]
    ids = {json.loads((tmp_path / name).read_text())["run_id"] for name in ("a.json", "b.json")}
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        assert set(rows) == ids and set(rows.values()) == {"complete"}
        per_run = dict(con.execute("SELECT run_id, count(*) FROM samples GROUP BY run_id").fetchall())
        assert sorted(per_run.values()) == [10, 10]
    finally:
        con.close()
