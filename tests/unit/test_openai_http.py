"""The `openai` backend's HTTP client: retries, Retry-After, jitter, bounded concurrency, key hygiene;
and how its errors are read when the server does not list the model (served.py).

Requests go through httpx.MockTransport, so the client's own code runs (status handling, JSON
parsing, retry loop) without sockets; test_fault_proxy.py does the same against real faults.
The advisory-listing rules are plain functions over errors, tested here on the messages real
servers send; tests/e2e/test_transformers_serve.py runs them against a real transformers serve.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from email.utils import formatdate

import httpx
import pytest

from harness.backends.openai.http import ApiError, AsyncApi, ClientConfig, backoff_delay, parse_retry_after, run_all
from harness.backends.openai.served import Listing, listing_from_error, model_missing, unlisted_failure, unlisted_warning


def _api_call(handler, config: ClientConfig, parse=lambda body: body["ok"]):
    async def go():
        api = AsyncApi(config, transport=httpx.MockTransport(handler))
        try:
            started = time.monotonic()
            result = await api.call("POST", "completions", {"x": 1}, parse)
            return result, api.stats.attempts, time.monotonic() - started
        finally:
            await api.aclose()

    return asyncio.run(go())


def _script(*responses):
    """A handler answering the scripted responses in turn (an Exception is raised as a transport error)."""
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


FAST = ClientConfig("http://server/v1", timeout_s=5, max_retries=5, backoff_base_s=0.01, backoff_cap_s=0.05, api_key="sk-secret-123")


def test_retries_every_transient_failure_then_succeeds() -> None:
    handler = _script(
        httpx.Response(503, json={"error": {"message": "overloaded"}}),
        httpx.Response(200, content=b'{"ok": tr'),  # malformed JSON
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.Response(200, json={"unexpected": "shape"}),  # parse raises KeyError: retried
        httpx.ConnectError("connection refused"),
        httpx.Response(200, json={"ok": 42}),
    )
    result, attempts, _ = _api_call(handler, FAST)
    assert (result, attempts) == (42, 6)
    assert all(r.headers["authorization"] == "Bearer sk-secret-123" for r in handler.seen)


def test_retry_after_is_honoured_in_seconds_and_as_http_date() -> None:
    handler = _script(httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200, json={"ok": 1}))
    _, attempts, elapsed = _api_call(handler, FAST)
    assert attempts == 2 and elapsed >= 1.0
    handler = _script(httpx.Response(429, headers={"Retry-After": formatdate(time.time() + 2, usegmt=True)}),
                      httpx.Response(200, json={"ok": 1}))
    _, attempts, elapsed = _api_call(handler, FAST)
    assert attempts == 2 and elapsed >= 0.9  # the date has whole-second resolution


def test_client_errors_fail_at_once_and_never_show_the_key() -> None:
    handler = _script(httpx.Response(401, json={"error": {"message": "Incorrect API key provided: sk-secret-123"}}))
    with pytest.raises(ApiError) as caught:
        _api_call(handler, FAST)
    assert caught.value.status == 401 and "sk-secret-123" not in str(caught.value) and "***" in str(caught.value)
    assert len(handler.seen) == 1
    exhausted = _script(*[httpx.Response(500, json={"error": "boom"})] * 6)
    with pytest.raises(ApiError, match="failed after 6 attempts: HTTP 500"):
        _api_call(exhausted, FAST)
    assert "sk-secret-123" not in repr(FAST)


def test_retry_after_parsing_and_full_jitter_bounds() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    assert parse_retry_after("99999", now) == 120.0  # capped
    rng = random.Random(1)
    config = ClientConfig("http://x", backoff_base_s=0.5, backoff_cap_s=4.0)
    delays = [backoff_delay(5, config, None, rng) for _ in range(500)]
    assert 0.0 <= min(delays) < 0.5 and 3.5 < max(delays) <= 4.0  # uniform over [0, cap]: full jitter
    assert all(backoff_delay(0, config, 2.0, rng) >= 2.0 for _ in range(50))


def test_run_all_bounds_concurrency_and_yields_each_index_once() -> None:
    in_flight, peak = [0], [0]

    def job_for(i: int):
        async def job(api: AsyncApi) -> int:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await asyncio.sleep(0.01 * (i % 3))
            in_flight[0] -= 1
            return i * i
        return job

    jobs = [job_for(i) for i in range(20)]
    results = list(run_all(ClientConfig("http://unused/v1", concurrency=3), jobs))
    assert sorted(results) == [(i, i * i) for i in range(20)]
    assert peak[0] == 3


# -- a model the listing does not name (served.py) ----------------------------------------------


def test_model_missing_reads_the_servers_own_words_not_our_url() -> None:
    said_missing = [
        ApiError("", 404, detail="The model `gpt-4` does not exist."),  # vLLM, OpenAI
        ApiError("", 404, detail='model "llama3" not found, try pulling it first'),  # Ollama
        ApiError("", 400, detail="Server is pinned to '/models/a'; requested 'b'."),  # transformers serve FORCE_MODEL
        ApiError("", 400, detail="Invalid model name passed in model=gpt-5"),  # LiteLLM
    ]
    assert [model_missing(e) for e in said_missing] == [True] * 4
    # a missing endpoint under a URL that says "model", and transformers serve's answer for a name it cannot load
    no_endpoint = ApiError("POST http://h/model-not-found/v1/completions -> HTTP 404: Not Found", 404, detail="Not Found")
    cannot_load = ApiError("POST ... failed after 3 attempts: HTTP 500: model not found", None, last_status=500)
    assert not model_missing(no_endpoint) and not model_missing(cannot_load)


def test_only_a_missing_or_failing_listing_is_advisory() -> None:
    absent, failing = listing_from_error(ApiError("", 404)), listing_from_error(ApiError("", None, last_status=503))
    assert absent is not None and absent.entries is None and "does not exist" in absent.reason
    assert failing is not None and failing.entries is None and "HTTP 503" in failing.reason
    unreachable, unauthorised = ApiError("refused", None, last_status=None), ApiError("", 401, detail="bad key")
    assert listing_from_error(unreachable) is None and listing_from_error(unauthorised) is None


def test_refusal_and_warning_are_one_line_naming_the_model() -> None:
    listed = Listing({"b": {}, "a": {}})
    missing = ApiError("POST u -> HTTP 404: The model `m` does not exist.", 404, detail="The model `m` does not exist.")
    failed = ApiError("POST u failed after 3 attempts: HTTP 500: Internal Server Error", None, last_status=500)
    refused = unlisted_failure("http://h/v1", "m", listed, missing)
    assert refused.startswith("openai: the server at http://h/v1 does not serve model 'm' (it lists: a, b;")
    assert "does not list model 'm' (/models fails (HTTP 502)) and failed" in unlisted_failure(
        "http://h/v1", "m", Listing(None, "/models fails (HTTP 502)"), failed)
    warning = unlisted_warning("http://h/v1", "m", Listing({}), "m@main")
    assert "(it lists: none)" in warning and "advisory" in warning and "'m@main'" in warning
    assert all("\n" not in line for line in (refused, warning))
