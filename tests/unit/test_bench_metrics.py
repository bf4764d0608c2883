"""Serving metrics, SSE/HTTP parsing, load shapes and prompt sets of `harness bench`, as pure functions."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.bench import sockclock
from harness.bench.client import build_timeline, parse_events
from harness.bench.datasets import BenchPrompt, HFTokenizer, load_prompts, random_prompts, sharegpt_prompts
from harness.bench.http_parse import Exchange, HttpError, Response
from harness.bench.load import Bounds, LoadLevel, arrival_offsets, run_level
from harness.bench.metrics import Slo, Timeline, cost_per_million, parse_slo, stats, summarize
from harness.core.errors import UsageError

MS = 1_000_000


def timeline(index: int, send_ms: float, token_ms: list[float], end_ms: float, out: int | None = None, **kw) -> Timeline:
    return Timeline(index=index, send_ns=int(send_ms * MS), end_ns=int(end_ms * MS), token_ns=[int(t * MS) for t in token_ms],
                    input_tokens=kw.pop("input_tokens", 10), output_tokens=out if out is not None else len(token_ms), **kw)


# ---- per-request metrics ----------------------------------------------------------------------


def test_ttft_tpot_e2e_itl_of_one_request():
    # a chunk of three tokens at 130 ms: gaps of zero inside it
    t = timeline(0, 100.0, [300.0, 320.0, 340.0, 340.0, 340.0, 360.0], 365.0)
    assert t.ttft_ms == pytest.approx(200.0)
    assert t.e2e_ms == pytest.approx(265.0)
    assert t.tpot_ms == pytest.approx((265.0 - 200.0) / 5)
    assert t.itl_ms() == pytest.approx([20.0, 20.0, 0.0, 0.0, 20.0])
    assert sum(t.itl_ms()) == pytest.approx(360.0 - 300.0)


def test_tpot_uses_the_reported_token_count_and_needs_two_tokens():
    t = timeline(0, 0.0, [10.0, 20.0], 50.0, out=5)  # usage says 5 tokens in 2 chunks
    assert t.tpot_ms == pytest.approx((50.0 - 10.0) / 4)
    assert timeline(0, 0.0, [10.0], 12.0).tpot_ms is None
    assert timeline(0, 0.0, [], 12.0, out=0).ttft_ms is None


def test_stats_are_numpys_linear_percentiles():
    values = [float(v) for v in range(1, 101)]
    s = stats(values)
    assert s.mean == pytest.approx(50.5) and s.n == 100
    assert s.std == pytest.approx(float(np.std(values)))
    assert (s.p50, s.p90, s.p95, s.p99) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert stats([]).mean is None and stats([]).n == 0


# ---- a level ----------------------------------------------------------------------------------


def test_summary_leaves_out_warmup_counts_failures_and_meets_slos():
    runs = [
        timeline(0, 0.0, [100.0, 110.0, 120.0], 125.0, warmup=True),  # never counted
        timeline(0, 1000.0, [1100.0, 1110.0, 1120.0], 1125.0, token_source="usage"),  # ttft 100, tpot 12.5
        timeline(1, 1000.0, [1300.0, 1360.0, 1420.0], 1420.0, token_source="usage"),  # ttft 300, tpot 60
        timeline(2, 1010.0, [1050.0], 3000.0, error="HTTP 500: boom"),  # failed: only in failed and duration
    ]
    s = summarize(runs, concurrency=4, rate=None, slo=Slo(ttft=200.0, tpot=50.0), gpu_cost_per_hour=3.6)
    assert (s.requests, s.completed, s.failed) == (3, 2, 1)
    assert s.duration_s == pytest.approx(2.0)  # first counted send (1000 ms) to the failed one's end (3000 ms)
    assert s.ttft_ms.n == 2 and s.ttft_ms.mean == pytest.approx(200.0)
    assert s.tpot_ms.mean == pytest.approx((12.5 + 60.0) / 2)
    assert s.itl_ms.n == 4 and s.e2e_ms.p50 == pytest.approx((125.0 + 420.0) / 2)
    assert s.output_tokens == 6 and s.output_tokens_per_s == pytest.approx(3.0)
    assert s.total_tokens_per_s == pytest.approx((6 + 20) / 2.0)
    assert s.requests_per_s == pytest.approx(1.0)
    assert s.goodput_requests_per_s == pytest.approx(0.5) and s.slo_attainment == pytest.approx(1 / 3)
    assert s.errors == {"HTTP 500: boom": 1} and s.token_source == "usage"
    assert s.cost_per_million_output_tokens == pytest.approx(3.6 / (3.0 * 3600) * 1e6)
    data = s.as_json()
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(data[key]) >= {"mean", "p50", "p90", "p99"}
    json.dumps(data)  # no NaN or infinity in the JSON


def test_no_slo_means_no_goodput_and_rate_levels_are_labelled():
    s = summarize([timeline(0, 0.0, [5.0, 6.0], 7.0)], concurrency=None, rate=math.inf)
    assert s.goodput_requests_per_s is None and s.slo_attainment is None
    assert s.label == "rate inf/s" and s.as_json()["rate"] is None and s.as_json()["rate_is_infinite"]


def test_parse_slo():
    assert parse_slo("ttft=500,tpot=50") == Slo(ttft=500.0, tpot=50.0)
    assert parse_slo("e2el=2000") == Slo(e2e=2000.0)
    for bad in ("ttft", "ttft=-1", "speed=3", "ttft=abc", "tpot=inf"):
        with pytest.raises(ValueError):
            parse_slo(bad)
    assert cost_per_million(None, 100.0) is None and cost_per_million(2.0, 0.0) is None


# ---- SSE events -> tokens ---------------------------------------------------------------------


def _events(*objs: object, at: int = 1000) -> list[tuple[int, bytes]]:
    return [(at + i, o if isinstance(o, bytes) else json.dumps(o).encode()) for i, o in enumerate(objs)]


def test_role_empty_and_usage_chunks_are_not_tokens():
    events = _events(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        b"[DONE]",
    )
    chunks, usage, error = parse_events(events)
    assert [c.text for c in chunks] == ["Hel", "lo"] and [c.ns for c in chunks] == [1001, 1003]
    assert usage == {"prompt_tokens": 7, "completion_tokens": 2} and error is None


def test_coalesced_chunks_count_their_tokens():
    continuous = _events(
        {"choices": [{"text": "a"}], "usage": {"completion_tokens": 1}},
        {"choices": [{"text": "bcd"}], "usage": {"completion_tokens": 4}},
        {"choices": [{"text": "e"}], "usage": {"completion_tokens": 5}},
    )
    assert [c.tokens for c in parse_events(continuous)[0]] == [1, 3, 1]
    with_logprobs = _events({"choices": [{"delta": {"content": "xy"}, "logprobs": {"content": [{}, {}]}}]})
    assert parse_events(with_logprobs)[0][0].tokens == 2


def test_token_counts_come_from_usage_else_the_tokenizer_else_chunks():
    prompt = BenchPrompt("p", None, 3, 8)
    body = _events({"choices": [{"text": " one"}]}, {"choices": [{"text": " two three"}]}, b"[DONE]")
    response = Response(status=200, headers={"content-type": "text/event-stream"}, events=body, end_ns=5000)
    def words(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    by_tokenizer = build_timeline(0, "r", 0, response, prompt, words)
    assert by_tokenizer.token_source == "tokenizer" and by_tokenizer.output_tokens == 3
    assert by_tokenizer.token_ns == [1000, 1001, 1001]
    by_chunks = build_timeline(0, "r", 0, response, prompt, None)
    assert by_chunks.token_source == "chunks" and by_chunks.output_tokens == 2 and by_chunks.input_tokens == 3
    usage = Response(status=200, headers={}, events=body[:2] + _events(
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}), end_ns=5000)
    by_usage = build_timeline(0, "r", 0, usage, prompt, words)
    assert (by_usage.token_source, by_usage.output_tokens, by_usage.input_tokens) == ("usage", 4, 9)


def test_an_error_event_fails_the_request():
    body = _events({"choices": [{"text": "a"}]}, {"error": {"message": "out of memory", "code": 500}}, b"[DONE]")
    t = build_timeline(0, "r", 0, Response(status=200, headers={}, events=body, end_ns=9), BenchPrompt("p", None, 1, 4), None)
    assert not t.ok and "out of memory" in t.error


# ---- HTTP framing -----------------------------------------------------------------------------


def _chunked(*events: bytes, sep: bytes = b"\n\n") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(b"data: " + e + sep), b"data: " + e + sep) for e in events)
    return head + body + b"0\r\n\r\n"


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_chunked_sse_is_parsed_whatever_the_read_sizes(sep: bytes, piece: int):
    raw = _chunked(b'{"choices":[{"text":"a"}]}', b'{"choices":[{"text":"b"}]}', b"[DONE]", sep=sep)
    loop = asyncio.new_event_loop()
    try:
        exchange = Exchange(loop, stream=True)
        for i in range(0, len(raw), piece):
            exchange.feed(i, raw[i : i + piece])
        assert exchange.done.done() and exchange.keep_alive
        events = exchange.response.events
        assert [p for _, p in events] == [b'{"choices":[{"text":"a"}]}', b'{"choices":[{"text":"b"}]}', b"[DONE]"]
        # an event is stamped with the read that completed its line
        line_end = raw.index(b"\n", raw.index(b'"a"}]}'))
        assert events[0][0] == (line_end // piece) * piece
    finally:
        loop.close()


def test_error_bodies_and_bodies_that_end_with_the_connection():
    loop = asyncio.new_event_loop()
    try:
        error = Exchange(loop, stream=True)
        error.feed(1, b'HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\n{"error":{"message":"no"}}')
        assert error.done.result().status == 404 and bytes(error.done.result().body).startswith(b'{"error"')
        old = Exchange(loop, stream=True)
        old.feed(1, b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\ndata: [DO")
        old.feed(2, b"NE]\n\n")
        assert not old.done.done()
        old.connection_closed(3, None)
        assert [p for _, p in old.done.result().events] == [b"x", b"[DONE]"] and not old.keep_alive
        cut = Exchange(loop, stream=True)
        cut.feed(1, _chunked(b"first", b"second")[:-12])
        cut.connection_closed(2, ConnectionResetError("reset"))
        with pytest.raises(HttpError, match="middle of the response"):
            cut.done.result()
        with pytest.raises(HttpError):
            Exchange(loop, stream=True).feed(1, b"SSH-2.0-OpenSSH\r\n\r\n")
    finally:
        loop.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux")
def test_kernel_arrival_stamps_are_on_the_monotonic_clock():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        assert sockclock.enable(client)
        # Linux turns receive timestamping on through a static key that it flips asynchronously when
        # the first socket asks for it (net_enable_timestamp): a segment that arrives before the flip
        # carries no stamp. Let it settle and exchange one warm-up byte before the measured one.
        time.sleep(0.05)
        peer.send(b"w")
        assert sockclock.recv(client, 64)[0] == b"w"
        sent = time.perf_counter_ns()
        peer.send(b"hello")
        time.sleep(0.3)  # read 300 ms late: the stamp must still say when it arrived
        data, arrived, read = sockclock.recv(client, 64)
        assert data == b"hello"
        assert sent <= arrived < sent + 100 * MS, (arrived - sent) / MS  # margin for a busy machine
        assert read - arrived > 200 * MS, (read - arrived) / MS
    finally:
        for s in (client, peer, server):
            s.close()


# ---- load -------------------------------------------------------------------------------------


class FakeEngine:
    """Answers after `delay` seconds and records how many requests were in flight."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay, self.in_flight, self.peak, self.sent = delay, 0, 0, []

    async def stream(self, prompt: BenchPrompt, index: int, request_id: str) -> Timeline:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        start = time.perf_counter_ns()
        self.sent.append(start)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        now = time.perf_counter_ns()
        return Timeline(index=index, send_ns=start, end_ns=now, token_ns=[now], output_tokens=1, request_id=request_id)


def test_closed_loop_keeps_exactly_the_concurrency_and_runs_warmup_first():
    engine = FakeEngine()
    prompts = [BenchPrompt(str(i), None, 1, 1) for i in range(5)]
    out = asyncio.run(run_level(engine, prompts, LoadLevel(4), Bounds(num_requests=20),
                                warmup_prompts=prompts[:3], prefix="x"))
    assert engine.peak == 4 and len(out) == 23
    assert [t.warmup for t in out[:3]] == [True] * 3 and not any(t.warmup for t in out[3:])
    assert sorted(t.index for t in out[3:]) == list(range(20))
    assert max(t.end_ns for t in out[:3]) <= min(t.send_ns for t in out[3:])


def test_duration_bound_stops_new_requests():
    engine = FakeEngine(delay=0.05)
    start = time.perf_counter_ns()
    out = asyncio.run(run_level(engine, [BenchPrompt("p", None, 1, 1)], LoadLevel(2), Bounds(duration_s=0.3)))
    assert 8 <= len(out) <= 14
    assert max(engine.sent) - start < 0.3e9


def test_rate_with_a_cap():
    engine = FakeEngine(delay=0.05)
    prompts = [BenchPrompt("p", None, 1, 1)]
    asyncio.run(run_level(engine, prompts, LoadLevel(3, math.inf), Bounds(num_requests=12)))
    assert engine.peak == 3
    engine = FakeEngine(delay=0.001)
    asyncio.run(run_level(engine, prompts, LoadLevel(None, 100.0), Bounds(num_requests=40), seed=1))
    span = (max(engine.sent) - min(engine.sent)) / 1e9
    assert 0.2 < span < 0.8  # 39 gaps of 10 ms on average


def test_arrivals_are_gamma_distributed_as_vllm():
    rng = np.random.default_rng(0)
    poisson = np.diff(arrival_offsets(20001, 10.0, 1.0, rng))
    bursty = np.diff(arrival_offsets(20001, 10.0, 0.25, rng))
    assert poisson.mean() == pytest.approx(0.1, rel=0.03) and bursty.mean() == pytest.approx(0.1, rel=0.05)
    assert poisson.std() / poisson.mean() == pytest.approx(1.0, rel=0.05)  # exponential gaps
    assert bursty.std() / bursty.mean() == pytest.approx(2.0, rel=0.08)  # CV = 1/sqrt(shape)
    assert not arrival_offsets(5, math.inf, 1.0, rng).any()
    with pytest.raises(ValueError):
        LoadLevel(None, None)


# ---- prompts ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    return HFTokenizer.load("embedded")


def test_random_prompts_have_the_asked_lengths(tokenizer: HFTokenizer):
    prompts = random_prompts(tokenizer, 20, 64, 16, seed=3)
    assert all(len(p.token_ids) == 64 and p.input_len == 64 and p.output_len == 16 for p in prompts)
    special = set(tokenizer._special)
    assert not any(set(p.token_ids) & special for p in prompts)
    assert prompts == random_prompts(tokenizer, 20, 64, 16, seed=3) != random_prompts(tokenizer, 20, 64, 16, seed=4)
    varied = random_prompts(tokenizer, 50, 100, 20, seed=0, range_ratio=0.5)
    lengths = [p.input_len for p in varied]
    assert min(lengths) >= 50 and max(lengths) <= 150 and len(set(lengths)) > 10


def test_sharegpt_prompts_and_their_errors(tokenizer: HFTokenizer, tmp_path: Path):
    data = [{"conversations": [{"from": "human", "value": "Explain how a transformer language model works, briefly."},
                               {"from": "gpt", "value": "It predicts the next token from the ones before it, using attention."}]},
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there friend"}]},
            {"conversations": [{"from": "human", "value": "only one turn"}]}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    prompts = sharegpt_prompts(path, tokenizer, 10, None, seed=0)
    assert len(prompts) == 1  # "hi" is too short, a single turn has no reply
    reply = data[0]["conversations"][1]["value"]
    assert prompts[0].output_len == len(tokenizer.encode(reply)) and prompts[0].messages[0]["role"] == "user"
    assert sharegpt_prompts(path, tokenizer, 10, 7, seed=0)[0].output_len == 7
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="not JSON"):
        sharegpt_prompts(tmp_path / "bad.json", tokenizer, 1, None, 0)
    with pytest.raises(UsageError, match="cannot read"):
        sharegpt_prompts(tmp_path / "missing.json", tokenizer, 1, None, 0)
    with pytest.raises(UsageError, match="unknown --dataset"):
        load_prompts("lmsys", tokenizer, n=1, input_len=1, output_len=1, seed=0)


def test_task_prompts_are_the_tasks_own(tokenizer: HFTokenizer):
    prompts = load_prompts("task:gsm8k", tokenizer, n=3, input_len=0, output_len=32, seed=0)
    assert len(prompts) == 3 and all("Question:" in p.text and p.output_len == 32 for p in prompts)
    assert all(p.input_len == len(tokenizer.encode(p.text)) for p in prompts)
