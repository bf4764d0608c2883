"""`harness bench`'s timings against ground truth: a real local streaming server's own log.

The scripted server (harness/servers/scripted_stream.py) runs in its own process, answers on a
script (TTFT, per-token gaps, chunks that carry several tokens, a role chunk, a usage chunk)
and logs when each request arrived and when each chunk was sent, on the same monotonic clock
as the client. Under load it drifts from its script, so the comparison is with its log: every
request's TTFT, TPOT and E2E as measured by the client must be within max(2 ms, 2%) of the
server's, at concurrency 1, 32 and 64, on this 2-core machine with both processes on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from harness.bench.client import OpenAIStreamClient
from harness.bench.datasets import BenchPrompt
from harness.bench.load import Bounds, LoadLevel, run_level
from harness.bench.metrics import Timeline, summarize
from tests.servers.scripted_stream import Script, ServerProcess, start_subprocess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares clocks across processes (Linux)")

SCRIPT = Script(ttft_ms=200.0, gap_ms=20.0, tokens=16, chunk_pattern=(1, 3, 1, 2))
TOKENS_PER_CHUNK = [1, 3, 1, 2, 1, 3, 1, 2, 1, 1]  # the pattern, cut at 16 tokens


def tolerance_ms(truth_ms: float) -> float:
    return max(2.0, 0.02 * abs(truth_ms))


def server_truth(entry: dict) -> dict[str, float]:
    first, read, end = entry["chunks"][0][0], entry["read_ns"], entry["end_ns"]
    return {"ttft": (first - read) / 1e6, "e2e": (end - read) / 1e6,
            "tpot": (end - first) / 1e6 / (entry["completion_tokens"] - 1)}


def client_view(t: Timeline) -> dict[str, float]:
    assert t.ttft_ms is not None and t.tpot_ms is not None
    return {"ttft": t.ttft_ms, "e2e": t.e2e_ms, "tpot": t.tpot_ms}


async def _measure(url: str, concurrency: int, api: str, requests: int) -> list[Timeline]:
    client = OpenAIStreamClient(url, SCRIPT.model, api=api)
    try:
        await client.probe(BenchPrompt("hello", None, 1, 4))
        prompts = [BenchPrompt(f"prompt number {i} about streaming", None, 5, 16) for i in range(requests)]
        warm = [BenchPrompt(f"warm-up {i}", None, 2, 16) for i in range(concurrency)]
        return await run_level(client, prompts, LoadLevel(concurrency), Bounds(num_requests=requests),
                               warmup_prompts=warm, prefix=f"{api}-c{concurrency}")
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    log = tmp_path_factory.mktemp("scripted") / "log.jsonl"
    process = start_subprocess(SCRIPT, log)
    yield process
    process.stop()


def test_one_clock_for_every_process():
    """perf_counter is CLOCK_MONOTONIC on Linux: a server process's times compare with ours."""
    assert time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    assert abs(time.perf_counter_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) < 10_000_000


@pytest.mark.parametrize("concurrency", [1, 32, 64])
def test_ttft_tpot_e2e_match_the_servers_log(server: ServerProcess, concurrency: int):
    requests = max(6, 2 * concurrency)
    timelines = asyncio.run(_measure(server.url, concurrency, "chat", requests))
    measured = [t for t in timelines if not t.warmup]
    assert len(measured) == requests and all(t.ok for t in measured), [t.error for t in measured if not t.ok]
    log = server.log()
    worst: dict[str, float] = {"ttft": 0.0, "tpot": 0.0, "e2e": 0.0}
    drift, late = [], []
    failures = []
    for t in measured:
        truth = server_truth(log[t.request_id])
        seen = client_view(t)
        drift.append(truth["ttft"] - SCRIPT.ttft_ms)
        late.append((log[t.request_id]["read_user_ns"] - log[t.request_id]["read_ns"]) / 1e6)
        for key in worst:
            delta = seen[key] - truth[key]
            worst[key] = max(worst[key], abs(delta))
            if abs(delta) > tolerance_ms(truth[key]):
                failures.append(f"{t.request_id} {key}: client {seen[key]:.3f} ms, server {truth[key]:.3f} ms")
        # Role chunk and usage chunk are not tokens; a chunk of k tokens counts k, all at its time.
        assert t.n_output == 16 and len(t.token_ns) == 16 and t.token_source == "usage"
        sizes = [len(list(group)) for _, group in itertools.groupby(t.token_ns)]
        assert sizes == TOKENS_PER_CHUNK
    print(f"\nc={concurrency}: worst |client - server| ttft {worst['ttft']:.3f} ms, tpot {worst['tpot']:.4f} ms, "
          f"e2e {worst['e2e']:.3f} ms over {requests} requests; server TTFT drift from its script: "
          f"median {np.median(drift):.2f} ms, max {max(drift):.2f} ms; the server process read requests up to "
          f"{max(late):.2f} ms after they arrived")
    assert not failures, "\n".join(failures[:20])
    summary = summarize(timelines, concurrency=concurrency, rate=None)
    assert summary.completed == requests and summary.failed == 0 and summary.itl_ms.n == 15 * requests


def test_crlf_events_and_completions_api(tmp_path: Path):
    """sse-starlette (llama_cpp.server) separates events with CRLF; completions carry `text`."""
    process = start_subprocess(Script(ttft_ms=50.0, gap_ms=5.0, tokens=8, chunk_pattern=(2,), crlf=True), tmp_path / "log.jsonl")
    try:
        timelines = asyncio.run(_measure(process.url, 4, "completions", 8))
        log = process.log()
    finally:
        process.stop()
    for t in (t for t in timelines if not t.warmup):
        truth = server_truth(log[t.request_id])
        assert len(t.token_ns) == 8 and t.n_output == 8
        assert abs(t.ttft_ms - truth["ttft"]) <= tolerance_ms(truth["ttft"])
        assert abs(t.e2e_ms - truth["e2e"]) <= tolerance_ms(truth["e2e"])


# ---- a real server: llama_cpp.server with the embedded model --------------------------------

PERF = re.compile(r"(prompt eval time|eval time|total time)\s*=\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")


def llama_perf_entries(stderr_text: str) -> list[dict[str, float]]:
    """llama.cpp's per-completion perf lines, in the order the completions finished."""
    entries: list[dict[str, float]] = []
    current: dict[str, float] = {}
    for line in stderr_text.splitlines():
        match = PERF.search(line)
        if not match:
            continue
        name, ms, count = match.group(1), float(match.group(2)), int(match.group(3))
        key = {"prompt eval time": "prompt", "eval time": "eval", "total time": "total"}[name]
        current[f"{key}_ms"], current[f"{key}_n"] = ms, count
        if key == "total":
            entries.append(current)
            current = {}
    return entries


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (pip install 'harness[gguf]')")
    from harness.backends.embedded import gguf_path

    gguf = gguf_path()
    work = tmp_path_factory.mktemp("llama")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = open(work / "stderr.txt", "w")
    # interrupt_requests=False: by default a new request aborts the stream in progress.
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                                "--port", str(port), "--interrupt_requests", "False", "--n_ctx", "2048"],
                               stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {(work / 'stderr.txt').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not answer within 120 s")
    yield url, str(gguf), work / "stderr.txt", work
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    err.close()


@pytest.mark.slow
def test_llama_cpp_server_agrees_with_its_own_timings(llama_server):
    """At concurrency 1, 2, 4: the report is produced, and TTFT / TPOT / E2E are consistent with
    the prompt-eval, eval and total times llama.cpp prints for each completion."""
    import duckdb

    from tests.conftest import harness_cli

    url, gguf, stderr_path, work = llama_server
    db, out = work / "bench.duckdb", work / "bench.json"
    result = harness_cli("bench", "--endpoint", url, "--concurrency", "1,2,4", "--num-prompts", "4", "--warmup", "1",
                         "--input-len", "48", "--output-len", "16", "--json", str(out), "--db", str(db), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["model"] == gguf and summary["token_count_source"] == "tokenizer"
    assert [lv["concurrency"] for lv in summary["levels"]] == [1, 2, 4]
    assert all(lv["failed"] == 0 and lv["completed"] == 4 for lv in summary["levels"]), summary["levels"]
    report = harness_cli("report", "--out", str(work / "site"), "--db", str(db))
    assert report.returncode == 0, report.stderr
    page = (work / "site" / "bench" / f"{summary['bench_id']}.html").read_text()
    assert "time to first token vs throughput" in page and "c=4" in page

    entries = llama_perf_entries(stderr_path.read_text())
    con = duckdb.connect(str(db), read_only=True)
    requests = con.execute(
        """SELECT level, warmup, first_token_ms - send_ms, end_ms - send_ms, output_tokens FROM bench_requests
           WHERE bench_id = ? ORDER BY level, end_ms""", [summary["bench_id"]]).fetchall()
    con.close()
    # The server finishes one completion at a time: its perf entries follow the requests' ends
    # in order, after the one of the probe request.
    assert len(entries) == len(requests) + 1, (len(entries), len(requests))
    rows = []
    for (level, warmup, ttft, e2e, n_out), perf in zip(requests, entries[1:]):
        decode_client = e2e - ttft  # first token to end, as the client saw it
        rows.append((level, warmup, ttft, perf["prompt_ms"], decode_client / max(n_out - 1, 1),
                     perf["eval_ms"] / max(perf["eval_n"], 1), e2e, perf["total_ms"], n_out, perf["eval_n"] + 1))
        # Decoding: the client's decode phase holds the server's eval time and its per-token overhead.
        assert decode_client >= 0.95 * perf["eval_ms"], (level, decode_client, perf)
        assert decode_client <= 1.5 * perf["eval_ms"] + 100, (level, decode_client, perf)
        # Prefill: the first token needs the prompt evaluated.
        assert ttft >= 0.95 * perf["prompt_ms"], (level, ttft, perf)
        # Start to end: the client sees the server's whole completion, plus HTTP and queueing.
        assert e2e >= 0.95 * perf["total_ms"], (level, e2e, perf)
        if level == 0:  # nothing queued at concurrency 1
            assert e2e <= perf["total_ms"] + max(150.0, 0.15 * perf["total_ms"]), (e2e, perf)
    print("\nlevel warmup  TTFT ms | prompt eval ms   TPOT ms | eval ms/token   E2E ms | total ms   tokens client/server")
    for r in rows:
        print(f"c={[1, 2, 4][r[0]]:<4} {str(r[1]):6} {r[2]:8.1f} | {r[3]:8.1f}   {r[4]:8.2f} | {r[5]:8.2f}   "
              f"{r[6]:8.1f} | {r[7]:8.1f}   {r[8]}/{r[9]}")
    # llama.cpp's prompt-eval counter reads ~0 ms for some completions (e.g. 0.05 ms for 49 tokens
    # right after start) while its total time still matches: such readings are left out below.
    for i, lv in enumerate(summary["levels"]):
        measured = [r for r in rows if r[0] == i and not r[1]]
        prompt = [r[3] for r in measured if r[3] >= 1.0]
        prompt_text = f"{np.mean(prompt):.1f} ms over {len(prompt)}" if prompt else "not measured"
        print(f"c={lv['concurrency']}: TTFT mean {lv['ttft_ms']['mean']:.1f} ms, p50 {lv['ttft_ms']['p50']:.1f} "
              f"(server prompt eval {prompt_text}); TPOT mean {lv['tpot_ms']['mean']:.2f} ms "
              f"(server eval {np.mean([r[5] for r in measured]):.2f} ms/token); E2E mean {lv['e2e_ms']['mean']:.1f} ms "
              f"(server total {np.mean([r[7] for r in measured]):.1f} ms)")
