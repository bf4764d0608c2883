"""Client overhead of `harness bench`: the token rate it sustains and the TTFT it adds.

Runs the scripted server (harness/servers/scripted_stream.py) with zero delays, so it streams as
fast as it can, and drives it with the bench client at high concurrency (one token per chunk,
the costliest case). Reported:

- tokens/s: output tokens over the level's duration, with client and server on this machine;
- client CPU per token: this process's CPU time over the tokens (the client's own capacity,
  whatever the server manages: 1e6 / µs per token = tokens/s one core could take);
- added TTFT: client-measured TTFT minus the server's logged TTFT (arrival to first chunk), per
  request; and the read lag: how long after a chunk arrived this process read it (what kernel
  arrival stamps keep out of the measurement, see harness/bench/sockclock.py);
- optionally the same load through a plain aiohttp client, for orientation.

    python benchmarks/bench_client.py [--concurrency 256] [--requests 2048] [--tokens 128] [--aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.bench.client import OpenAIStreamClient, PendingTimeline  # noqa: E402
from harness.bench.datasets import BenchPrompt  # noqa: E402
from harness.bench.load import Bounds, LoadLevel, run_level  # noqa: E402
from tests.servers.scripted_stream import Script, start_subprocess  # noqa: E402


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def harness_client(url: str, model: str, concurrency: int, requests: int, tokens: int) -> dict:
    client = OpenAIStreamClient(url, model, api="completions")
    await client.probe(BenchPrompt("hello", None, 1, 4))
    prompts = [BenchPrompt(f"prompt {i}", None, 2, tokens) for i in range(64)]
    lags: list[float] = []
    original = PendingTimeline.finish

    def finish(self: PendingTimeline):  # the read lag lives on the raw response
        lags.append(self.response.max_read_lag_ns / 1e6)
        return original(self)

    PendingTimeline.finish = finish  # type: ignore[method-assign]
    try:
        cpu0 = _cpu_s()
        timelines = await run_level(client, prompts, LoadLevel(concurrency), Bounds(num_requests=requests),
                                    warmup_prompts=prompts[:concurrency] * (concurrency // 64 + 1), prefix="bc")
        cpu = _cpu_s() - cpu0
    finally:
        PendingTimeline.finish = original  # type: ignore[method-assign]
        await client.aclose()
    measured = [t for t in timelines if not t.warmup]
    return {"timelines": measured, "cpu_s": cpu, "read_lag_ms": lags[-len(measured):]}


async def aiohttp_client(url: str, model: str, concurrency: int, requests: int, tokens: int) -> list[dict]:
    """vLLM's style: aiohttp, a timestamp when each line is handed to the coroutine."""
    import aiohttp

    out: list[dict] = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            for i in counter:
                body = {"model": model, "prompt": f"prompt {i}", "max_tokens": tokens, "stream": True}
                start = time.perf_counter_ns()
                first, n = 0, 0
                async with session.post(f"{url}/completions", json=body, headers={"X-Harness-Request-Id": f"aio-{i}"}) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: {") and b'"text"' in line:
                            n += 1
                            if not first:
                                first = time.perf_counter_ns()
                out.append({"id": f"aio-{i}", "send": start, "first": first, "end": time.perf_counter_ns(), "n": n})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _pct(values: list[float]) -> str:
    a = np.asarray(values)
    return f"p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms, max {a.max():.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--chunk-pattern", default="1")
    parser.add_argument("--aiohttp", action="store_true", help="also run a plain aiohttp client")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    pattern = tuple(int(x) for x in a.chunk_pattern.split(","))
    script = Script(ttft_ms=0.0, gap_ms=0.0, tokens=a.tokens, chunk_pattern=pattern)
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    server = start_subprocess(script, work / "log.jsonl")
    report: dict = {"concurrency": a.concurrency, "requests": a.requests, "tokens": a.tokens, "chunk_pattern": pattern}
    try:
        result = asyncio.run(harness_client(server.url, script.model, a.concurrency, a.requests, a.tokens))
        timelines = result["timelines"]
        log = server.log()
        failed = [t for t in timelines if not t.ok]
        ok = [t for t in timelines if t.ok]
        duration = (max(t.end_ns for t in timelines) - min(t.send_ns for t in timelines)) / 1e9
        out_tokens = sum(t.n_output for t in ok)
        added = [t.ttft_ms - (log[t.request_id]["chunks"][0][0] - log[t.request_id]["read_ns"]) / 1e6 for t in ok]
        server_late = [(log[t.request_id]["read_user_ns"] - log[t.request_id]["read_ns"]) / 1e6 for t in ok]
        report["harness"] = {
            "failed": len(failed), "duration_s": duration, "output_tokens": out_tokens,
            "tokens_per_s": out_tokens / duration, "client_cpu_s": result["cpu_s"],
            "client_cpu_us_per_token": 1e6 * result["cpu_s"] / out_tokens,
            "added_ttft_ms_p50": float(np.percentile(added, 50)), "added_ttft_ms_p99": float(np.percentile(added, 99)),
            "added_ttft_ms_max": float(max(added)),
            "read_lag_ms_p50": float(np.percentile(result["read_lag_ms"], 50)),
            "read_lag_ms_p99": float(np.percentile(result["read_lag_ms"], 99)),
        }
        h = report["harness"]
        print(f"harness client, {a.concurrency} streams, {a.requests} requests x {a.tokens} tokens, chunks {pattern}:")
        print(f"  {h['tokens_per_s']:,.0f} output tokens/s over {duration:.2f} s ({len(failed)} failed); "
              f"client CPU {h['client_cpu_us_per_token']:.2f} µs/token "
              f"(= {1e6 / h['client_cpu_us_per_token']:,.0f} tokens/s per core)")
        print(f"  added TTFT (client - server log): {_pct(added)}")
        print(f"  read lag (arrival -> this process reads the chunk; not in the measurement): {_pct(result['read_lag_ms'])}")
        print(f"  the server process read requests late by: {_pct(server_late)}")
        if a.aiohttp:
            rows = asyncio.run(aiohttp_client(server.url, script.model, a.concurrency, a.requests, a.tokens))
            log = server.log()
            added = [(r["first"] - r["send"]) / 1e6 - (log[r["id"]]["chunks"][0][0] - log[r["id"]]["read_ns"]) / 1e6
                     for r in rows if r["first"]]
            duration = (max(r["end"] for r in rows) - min(r["send"] for r in rows)) / 1e9
            rate = sum(r["n"] for r in rows) / duration
            report["aiohttp"] = {"tokens_per_s": rate, "added_ttft_ms_p50": float(np.percentile(added, 50)),
                                 "added_ttft_ms_p99": float(np.percentile(added, 99))}
            print(f"plain aiohttp client: {rate:,.0f} output tokens/s; added TTFT {_pct(added)}")
    finally:
        server.stop()
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
