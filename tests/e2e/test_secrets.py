"""Secrets by construction: a canary through every channel a credential can take, then a search of
everything the runs produced (every file, the database's bytes and its WAL, a dump of every table,
stdout and stderr of every command) for any of them.

Channels: the API-key environment variable, credentials in a model URL (user:TOKEN@host), a
`body.*` model arg, a judge's URL credentials and judge args, and the serving benchmark's
--api-key and endpoint credentials. Each credential must also have been *used*: the servers
record which Authorization header (hashed) or body field arrived.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from harness.serve.scripted_judge import JudgeServer, Script
from tests.conftest import harness_cli
from tests.servers.scripted_stream import Script as StreamScript
from tests.servers.scripted_stream import start_subprocess

pytestmark = pytest.mark.slow

CANARIES = {
    "env_key": "canary-env-7c1a",
    "url_password": "canary-url-93be",
    "body": "canary-body-51d0",
    "judge_url_password": "canary-judgeurl-0e4f",
    "judge_body": "canary-judgebody-a2c9",
    "bench_key": "canary-benchkey-66b3",
    "bench_url_password": "canary-benchurl-d417",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def judge() -> JudgeServer:
    rules = {"model": "judge", "rules": [{"match": "Rating", "reply": "The answer is fine. Rating: [[7]]"},
                                         {"match": ".", "reply": "The answer is 42. #### 42"}]}
    server = JudgeServer(Script.from_json(rules)).start()
    yield server
    server.stop()


def with_password(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


def test_no_channel_leaks_a_credential(tmp_path: Path, judge: JudgeServer) -> None:
    out = tmp_path / "out"
    out.mkdir()
    db = out / "results.duckdb"
    env = {"OPENAI_API_KEY": CANARIES["env_key"], "HARNESS_DATA_SOURCE": "fixture"}
    outputs: list[str] = []

    def cli(*args: str) -> None:
        proc = harness_cli(*args, env=env, timeout=600)
        outputs.extend([proc.stdout, proc.stderr])
        assert proc.returncode == 0, proc.stderr

    base = f"{judge.base_url}"  # http://127.0.0.1:PORT/v1
    model_url = with_password(base, "user", CANARIES["url_password"])
    # 1. URL credentials, a body field and the env key, on a generate-only task (no logprob probe)
    cli("run", "--tasks", "gsm8k", "--limit", "1", "--num-fewshot", "0", "--no-progress", "--db", str(db),
        "--model", f"openai:judge@{model_url}", "--model-args", f"body.authorization={CANARIES['body']},concurrency=2",
        "--json", str(out / "gsm8k.json"), "--tag", "canary")
    # 2. a judged task: the judge's URL credentials and a judge arg
    judge_url = with_password(base, "grader", CANARIES["judge_url_password"])
    cli("run", "--tasks", "mt_bench", "--limit", "1", "--no-progress", "--db", str(db), "--model", f"openai:judge@{base}",
        "--judge", f"openai:judge@{judge_url}", "--judge-args", f"body.x_judge={CANARIES['judge_body']},temperature=0",
        "--json", str(out / "mt_bench.json"))
    # 3. the serving benchmark: --api-key and endpoint credentials
    stream = start_subprocess(StreamScript(ttft_ms=5.0, gap_ms=1.0, tokens=4, api_key=CANARIES["bench_key"]),
                              tmp_path / "stream-log.jsonl")
    try:
        cli("bench", "--no-progress", "--endpoint", with_password(stream.url, "b", CANARIES["bench_url_password"]),
            "--api-key", CANARIES["bench_key"], "--num-prompts", "2", "--warmup", "0", "--db", str(db),
            "--json", str(out / "bench.json"))
    finally:
        stream.stop()
    # everything that reads the database back out
    cli("runs", "--db", str(db))
    cli("show", "canary", "--db", str(db))
    cli("report", "--out", str(out / "site"), "--db", str(db))
    run_id = json.loads((out / "gsm8k.json").read_text())["run_id"]
    cli("export", run_id, "--parquet", str(out / "export"), "--db", str(db))

    # the credentials were used for the requests
    seen = judge.requests()
    model_calls = [r for r in seen if r["body"].get("authorization") == CANARIES["body"]]
    assert model_calls and {r["auth_sha256"] for r in model_calls} == {sha(basic("user", CANARIES["url_password"]))}
    judged = [r for r in seen if r["body"].get("x_judge") == CANARIES["judge_body"]]
    assert judged and {r["auth_sha256"] for r in judged} == {sha(basic("grader", CANARIES["judge_url_password"]))}
    answered = [r for r in seen if "x_judge" not in r["body"] and "authorization" not in r["body"]]
    assert answered and {r["auth_sha256"] for r in answered} == {sha("Bearer " + CANARIES["env_key"])}
    assert json.loads((out / "bench.json").read_text())["levels"][0]["completed"] == 2  # the key was accepted

    # ... and are nowhere in what the runs produced
    files = [p for p in out.rglob("*") if p.is_file()]
    assert db in files and any(p.name.endswith(".parquet") for p in files) and (out / "site" / "index.html") in files
    blobs = {str(p): p.read_bytes() for p in files}
    con = duckdb.connect(str(db), read_only=True)
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            blobs[f"table {table}"] = json.dumps(con.execute(f"SELECT * FROM {table}").fetchall(), default=str).encode()
    finally:
        con.close()
    blobs["stdout+stderr"] = "\n".join(outputs).encode()
    leaks = {(name, where) for name, canary in CANARIES.items() for where, data in blobs.items() if canary.encode() in data}
    assert leaks == set()
    # the stored specs say where credentials were removed
    stored = blobs["table runs"].decode()
    assert "http://***@127.0.0.1" in stored
