"""`harness bench` from the command line: tables, JSON, stored timelines, report pages, faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, harness_cli
from tests.servers.scripted_stream import Script, ServerProcess, start_subprocess

FAST = Script(ttft_ms=20.0, gap_ms=2.0, tokens=12, chunk_pattern=(1, 2))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    process = start_subprocess(FAST, tmp_path_factory.mktemp("srv") / "log.jsonl")
    yield process
    process.stop()


def _one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-1500:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("harness: error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return harness_cli("bench", "--no-progress", *args, timeout=timeout)


def test_sweep_prints_stores_reports_and_writes_json(server: ServerProcess, tmp_path: Path):
    db, out = tmp_path / "r.duckdb", tmp_path / "bench.json"
    result = _bench("--endpoint", server.url, "--model-name", "scripted", "--api", "chat", "--concurrency", "1,4",
                    "--num-prompts", "8", "--input-len", "32", "--output-len", "12", "--slo", "ttft=500,tpot=50",
                    "--gpu-cost-per-hour", "2.5", "--json", str(out), "--db", str(db), "--tag", "ci")
    assert result.returncode == 0, result.stderr
    for text in ("concurrency 1", "concurrency 4", "TTFT", "TPOT", "ITL", "E2E", "goodput", "sweep", "per million output"):
        assert text in result.stdout
    summary = json.loads(out.read_text())
    assert summary["token_count_source"] == "usage" and summary["hardware"]["cpu_count"] >= 1
    assert [lv["concurrency"] for lv in summary["levels"]] == [1, 4]
    for level in summary["levels"]:
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert {"mean", "p50", "p90", "p99"} <= set(level[key]) and level[key]["mean"] > 0
        assert level["completed"] == 8 and level["failed"] == 0
        assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
        assert level["goodput_requests_per_s"] == pytest.approx(level["requests_per_s"])  # generous SLOs: all meet
        assert level["cost_per_million_output_tokens"] == pytest.approx(2.5 / (level["output_tokens_per_s"] * 3600) * 1e6)
        assert 19.0 < level["ttft_ms"]["p50"] < 40.0  # the script's 20 ms, and what this machine adds to it

    con = duckdb.connect(str(db), read_only=True)
    status, tags = con.execute("SELECT status, (SELECT string_agg(tag, ',') FROM bench_run_tags) FROM bench_runs").fetchone()
    rows = con.execute("""SELECT level, warmup, len(token_ms), output_tokens, first_token_ms - send_ms, error
                          FROM bench_requests ORDER BY level, warmup, request_index""").fetchall()
    stats = con.execute("SELECT count(*) FROM bench_level_stats").fetchone()[0]
    con.close()
    assert status == "complete" and tags == "ci" and stats == 8
    measured = [r for r in rows if not r[1]]
    assert len(measured) == 16 and len(rows) == 16 + 1 + 4  # warm-up: one request per concurrent stream
    assert all(r[2] == 12 and r[3] == 12 and r[4] >= 19.0 and r[5] is None for r in measured)

    report = harness_cli("report", "--out", str(tmp_path / "site"), "--db", str(db))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "site" / "bench" / f"{summary['bench_id']}.html").read_text()
    for text in ("time to first token vs throughput", "time per output token vs throughput", "TTFT (ms), c=4",
                 "ITL (ms), c=1", "<svg", "cpu_count"):
        assert text in page
    assert summary["bench_id"] in (tmp_path / "site" / "bench" / "index.html").read_text()
    assert 'href="bench/index.html"' in (tmp_path / "site" / "index.html").read_text()


def test_unreachable_endpoint_is_one_line_and_exit_2(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = _bench("--endpoint", f"http://127.0.0.1:{port}/v1", "--model-name", "m", "--db", str(tmp_path / "r.duckdb"))
    _one_line_error(result, "cannot reach endpoint")
    assert "connection refused" in result.stderr


def test_wrong_model_name_is_one_line_and_exit_2(server: ServerProcess, tmp_path: Path):
    result = _bench("--endpoint", server.url, "--model-name", "llama-70b", "--db", str(tmp_path / "r.duckdb"))
    _one_line_error(result, "does not serve model 'llama-70b'")


@pytest.mark.parametrize("args, needle", [
    (["--slo", "ttft"], "--slo"),
    (["--concurrency", "0"], "--concurrency"),
    (["--dataset", "lmsys"], "unknown --dataset"),
    (["--rate", "-2"], "--rate"),
    (["--model", "hf:x"], "one of --endpoint"),
    (["--endpoint", "ftp://host/v1"], "--endpoint"),
    (["--json", "/no/such/dir/b.json"], "--json"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path):
    base = [] if "--endpoint" in args else ["--endpoint", "http://127.0.0.1:9/v1"]
    _one_line_error(_bench(*base, "--model-name", "m", *args, "--db", str(tmp_path / "r.duckdb")), needle)


def test_server_errors_mid_run_are_counted_as_failed_requests(tmp_path: Path):
    faulty = Script(ttft_ms=10.0, gap_ms=2.0, tokens=8, fail_every=5, drop_every=7, error_event_every=11, drop_after=2)
    process = start_subprocess(faulty, tmp_path / "log.jsonl")
    try:
        out, db = tmp_path / "b.json", tmp_path / "r.duckdb"
        result = _bench("--endpoint", process.url, "--concurrency", "3", "--num-prompts", "40", "--warmup", "0",
                        "--input-len", "8", "--output-len", "8", "--json", str(out), "--db", str(db))
        log = process.log()
    finally:
        process.stop()
    assert result.returncode == 0, result.stderr
    level = json.loads(out.read_text())["levels"][0]
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT request_id, error, len(token_ms) FROM bench_requests").fetchall()
    con.close()
    failed = {rid for rid, error, _ in stored if error is not None}
    faulted = {rid for rid, entry in log.items() if entry["status"] == 500 or entry["fault"]}
    assert failed == faulted and len(failed) >= 10  # 40 requests: every 5th, 7th and 11th fails
    assert level["failed"] == len(failed) and level["completed"] == 40 - len(failed) and level["requests"] == 40
    kinds = {"HTTP 500" if e.startswith("HTTP 500") else "reset" if "middle of the response" in e else e
             for e in level["errors"]}
    assert kinds == {"HTTP 500", "reset", "scripted mid-stream error"}, level["errors"]
    dropped = [n for rid, error, n in stored if error and "middle" in error]
    assert dropped and all(n == 2 for n in dropped)  # what arrived before the drop is kept


def test_rate_sweep_bounded_by_duration(server: ServerProcess, tmp_path: Path):
    out = tmp_path / "b.json"
    result = _bench("--endpoint", server.url, "--rate", "40,inf", "--max-concurrency", "4", "--burstiness", "0.5",
                    "--duration", "0.8", "--warmup", "0", "--input-len", "8", "--output-len", "12", "--json", str(out),
                    "--db", str(tmp_path / "r.duckdb"))
    assert result.returncode == 0, result.stderr
    first, second = json.loads(out.read_text())["levels"]
    assert first["rate"] == 40.0 and first["concurrency"] == 4 and second["rate_is_infinite"]
    assert 10 <= first["requests"] <= 60 and first["failed"] == 0
    # at most 4 in flight, each ~45 ms: the infinite rate is bounded by the cap
    assert second["requests"] <= 4 * 0.8 / 0.04 + 8 and second["requests_per_s"] > first["requests_per_s"]


def test_ignore_eos_asks_for_exactly_max_tokens(server: ServerProcess, tmp_path: Path):
    for flag, expected in ((["--ignore-eos"], 20), ([], 12)):  # the script stops at 12 tokens by itself
        out = tmp_path / f"b{expected}.json"
        result = _bench("--endpoint", server.url, "--num-prompts", "2", "--output-len", "20", "--input-len", "8",
                        *flag, "--json", str(out), "--db", str(tmp_path / "r.duckdb"))
        assert result.returncode == 0, result.stderr
        level = json.loads(out.read_text())["levels"][0]
        assert level["output_tokens"] == 2 * expected


def test_task_and_sharegpt_datasets(server: ServerProcess, tmp_path: Path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"conversations": [
        {"from": "human", "value": f"Question number {i}: what is a key-value cache in a transformer?"},
        {"from": "gpt", "value": "It keeps the keys and values of earlier tokens so that they are not recomputed."}]}
        for i in range(6)]))
    for dataset in ("task:gsm8k", f"sharegpt:{path}"):
        out = tmp_path / "b.json"
        result = _bench("--endpoint", server.url, "--dataset", dataset, "--num-prompts", "3", "--concurrency", "2",
                        "--output-len", "6", "--api", "chat", "--json", str(out), "--db", str(tmp_path / "r.duckdb"))
        assert result.returncode == 0, result.stderr
        level = json.loads(out.read_text())["levels"][0]
        assert level["completed"] == 3 and level["input_tokens"] > 3 * 8  # the server counted the prompts' words


def test_an_interrupted_bench_is_not_complete(tmp_path: Path):
    process = start_subprocess(Script(ttft_ms=3000.0, gap_ms=10.0, tokens=4), tmp_path / "log.jsonl")
    db = tmp_path / "r.duckdb"
    try:
        bench = subprocess.Popen([sys.executable, "-m", "harness", "bench", "--no-progress", "--endpoint", process.url,
                                  "--num-prompts", "4", "--warmup", "0", "--db", str(db)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                                 # a shell without job control starts background jobs with SIGINT ignored
                                 # (CI may run us so); a user's Ctrl-C meets the default disposition
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # wait until the load has started: on a fresh machine the first use of the embedded
        # tokenizer converts the model first, which takes minutes on a loaded 2-core runner
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and bench.poll() is None and not any(e["id"] for e in process.log().values()):
            time.sleep(0.2)
        assert bench.poll() is None and any(e["id"] for e in process.log().values()), "the load never started"
        bench.send_signal(signal.SIGINT)
        _, stderr = bench.communicate(timeout=60)
    finally:
        process.stop()
    assert bench.returncode == 130 and "stored as failed" in stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM bench_runs").fetchall() == [("failed",)]
    con.close()


def test_schema_1_database_is_upgraded_and_reported(tmp_path: Path, monkeypatch):
    from harness.report.site import build_site
    from harness.store import migrations
    from harness.store.db import Store

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 1)
    migrations.migrate(con)
    con.close()
    monkeypatch.undo()
    store = Store(db, read_only=True)  # a report reads an old database as it is
    build_site(store, tmp_path / "site")
    store.close()
    assert "No serving benchmarks" in (tmp_path / "site" / "bench" / "index.html").read_text()
    Store(db).close()  # opened for writing, it is upgraded in place
    con = duckdb.connect(str(db), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"bench_runs", "bench_levels", "bench_level_stats", "bench_requests"} <= tables
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == migrations.SCHEMA_VERSION
    con.close()


def test_in_process_gguf(tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'harness[gguf]')")
    out = tmp_path / "b.json"
    result = _bench("--model", "gguf:smollm2-135m-instruct", "--concurrency", "1,2", "--num-prompts", "2",
                    "--input-len", "16", "--output-len", "4", "--ignore-eos", "--json", str(out),
                    "--db", str(tmp_path / "r.duckdb"), timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["backend"] == "gguf" and summary["token_count_source"] == "engine"
    for level in summary["levels"]:
        assert level["completed"] == 2 and level["output_tokens"] == 8 and level["input_tokens"] == 32
        assert level["peak_memory_mb"] > 50 and level["itl_ms"]["n"] == 6


@pytest.mark.slow
def test_in_process_hf_batches_concurrent_requests(tmp_path: Path):
    out, db = tmp_path / "b.json", tmp_path / "r.duckdb"
    result = _bench("--model", "hf:smollm2-135m-instruct", "--concurrency", "2", "--num-prompts", "2", "--warmup", "1",
                    "--input-len", "8", "--output-len", "4", "--ignore-eos", "--json", str(out), "--db", str(db), timeout=900)
    assert result.returncode == 0, result.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["completed"] == 2 and level["output_tokens"] == 8 and level["peak_memory_mb"] > 100
    con = duckdb.connect(str(db), read_only=True)
    ends = con.execute("SELECT token_ms FROM bench_requests WHERE NOT warmup").fetchall()
    con.close()
    assert ends[0][0] == ends[1][0]  # one static batch: both rows get every token at the same step


def test_credentials_are_checked_first_and_never_stored(tmp_path: Path):
    process = start_subprocess(Script(ttft_ms=5.0, gap_ms=1.0, tokens=4, api_key="sk-secret-123"), tmp_path / "log.jsonl")
    db = tmp_path / "r.duckdb"
    try:
        wrong = _bench("--endpoint", process.url, "--api-key", "sk-wrong", "--db", str(db))
        right = harness_cli("bench", "--no-progress", "--endpoint", process.url, "--num-prompts", "2", "--input-len", "4",
                            "--db", str(db), env={"OPENAI_API_KEY": "sk-secret-123"})
        flag = _bench("--endpoint", process.url, "--api-key", "sk-secret-123", "--num-prompts", "2", "--input-len", "4",
                      "--db", str(db))
    finally:
        process.stop()
    _one_line_error(wrong, "refused the credentials")
    assert right.returncode == 0 and flag.returncode == 0, (right.stderr, flag.stderr)
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT metadata::VARCHAR || config::VARCHAR FROM bench_runs").fetchall()
    con.close()
    assert len(stored) == 2 and not any("sk-secret" in text for (text,) in stored)
    assert any("--api-key" in text and "***" in text for (text,) in stored)


def test_vllm_without_vllm_is_one_line(tmp_path: Path):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here: its path is exercised on a GPU machine")
    except ImportError:
        pass
    _one_line_error(_bench("--model", "vllm:facebook/opt-125m", "--db", str(tmp_path / "r.duckdb")), "vllm")


def test_a_request_past_its_timeout_fails_and_keeps_its_tokens(tmp_path: Path):
    process = start_subprocess(Script(ttft_ms=20.0, gap_ms=400.0, tokens=6), tmp_path / "log.jsonl")
    out, db = tmp_path / "b.json", tmp_path / "r.duckdb"
    try:
        result = _bench("--endpoint", process.url, "--num-prompts", "2", "--warmup", "0", "--timeout", "1.0",
                        "--input-len", "4", "--json", str(out), "--db", str(db))
    finally:
        process.stop()
    assert result.returncode == 0, result.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["failed"] == 2 and list(level["errors"]) == ["no complete response within 1 s"]
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT len(token_ms), end_ms - send_ms FROM bench_requests").fetchall()
    con.close()
    assert all(n == 3 and 990 <= e2e < 1300 for n, e2e in rows), rows  # tokens at 20, 420, 820 ms; cut at 1 s
