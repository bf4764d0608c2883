"""The retrying async HTTP client of the `openai` backend.

One POST or GET is retried with exponential backoff and full jitter (AWS architecture blog,
"Exponential Backoff And Jitter") on what a retry can fix: 429, any 5xx, timeouts, refused or
reset connections, bodies cut midway, and bodies that are not the JSON we expect. A `Retry-After`
header (seconds or an HTTP date) sets a floor under the wait. Other 4xx answers are the caller's
fault and fail at once.

The API key lives only in the request header of the httpx client. It is never part of a repr, a
log line or an exception message: every message built here passes through `ClientConfig.scrub`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from harness.core.redact import MASK, strip_userinfo

log = logging.getLogger("harness.openai")
T = TypeVar("T")

# A server asking for more than this is treated as asking for this: a run should not sit silent
# for an hour because one proxy said so; the retry after it will ask again if it still means it.
RETRY_AFTER_CAP_S = 120.0


class ApiError(Exception):
    """A request that failed for good: a 4xx other than 429 (`status`), or retries exhausted
    (`status` None; `last_status` the HTTP status of the last attempt, None if no answer came:
    a 5xx-answering server is up, an unreachable one is not, and callers word the two apart).
    `detail` is the server's own message of a 4xx, without our URL, for callers that read it."""

    def __init__(self, message: str, status: int | None = None, last_status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.last_status = last_status
        self.detail = detail


class MalformedResponse(Exception):
    """The body parsed as HTTP but is not what the endpoint returns; retried like a 5xx."""


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    timeout_s: float = 300.0
    max_retries: int = 6
    concurrency: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    api_key: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)  # from the URL's user:password@

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def scrub(self, text: str) -> str:
        """Text safe to show: the key and URL credentials replaced, wherever a server or library echoed them."""
        for secret in (self.api_key, *(self.basic_auth or ())):
            if secret:
                text = text.replace(secret, MASK)
        return strip_userinfo(text)


@dataclass
class ClientStats:
    """Counted across every client a backend creates; shown in describe()."""

    attempts: int = 0  # HTTP requests sent, retries included
    retries: int = 0


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after_s, self.status = reason, retry_after_s, status


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), RETRY_AFTER_CAP_S)


def backoff_delay(attempt: int, config: ClientConfig, retry_after_s: float | None, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)], never below what the server asked."""
    ceiling = min(config.backoff_cap_s, config.backoff_base_s * (2 ** attempt))
    delay = rng.uniform(0.0, ceiling)
    return max(delay, retry_after_s) if retry_after_s is not None else delay


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        return _short(str(message))
    except ValueError:
        return _short(response.text)


class AsyncApi:
    """An httpx.AsyncClient with the retry policy; create and use it inside one event loop."""

    def __init__(self, config: ClientConfig, stats: ClientStats | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.stats = stats or ClientStats()
        self.rng = random.Random()
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        self._client = httpx.AsyncClient(base_url=config.base_url, headers=config.headers(), limits=limits,
                                         timeout=httpx.Timeout(config.timeout_s), transport=transport,
                                         auth=httpx.BasicAuth(*config.basic_auth) if config.basic_auth else None)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, path: str, payload: dict | None, parse: Callable[[Any], T]) -> T:
        """`parse(json)` turns the body into the result; raising MalformedResponse retries the request."""
        last, last_status = "", None
        for attempt in range(self.config.max_retries + 1):
            try:
                return await self._once(method, path, payload, parse)
            except _Retryable as failure:
                last, retry_after, last_status = failure.reason, failure.retry_after_s, failure.status
            except httpx.TimeoutException:
                last, retry_after, last_status = f"no answer within {self.config.timeout_s:g} s", None, None
            except httpx.TransportError as error:  # refused, reset, cut midway (RemoteProtocolError)
                last, retry_after, last_status = f"{type(error).__name__}: {error}", None, None
            if attempt == self.config.max_retries:
                break
            delay = backoff_delay(attempt, self.config, retry_after, self.rng)
            self.stats.retries += 1
            log.info("%s %s: %s; retry %d/%d in %.2f s", method, path, self.config.scrub(last), attempt + 1,
                     self.config.max_retries, delay)
            await asyncio.sleep(delay)
        raise ApiError(self.config.scrub(f"{method} {self.config.base_url.rstrip('/')}/{path.lstrip('/')} failed after "
                                         f"{self.config.max_retries + 1} attempts: {_short(last)}"), last_status=last_status)

    async def _once(self, method: str, path: str, payload: dict | None, parse: Callable[[Any], T]) -> T:
        self.stats.attempts += 1
        # A total deadline, not httpx's per-read one: a server trickling bytes must not hold a slot forever.
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await self._client.request(method, path, json=payload)
        except TimeoutError:
            raise httpx.ReadTimeout("deadline") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {_error_message(response)}", parse_retry_after(response.headers.get("retry-after")),
                             status)
        if status >= 400:
            url = f"{self.config.base_url.rstrip('/')}/{path.lstrip('/')}"
            detail = self.config.scrub(_error_message(response))
            raise ApiError(self.config.scrub(f"{method} {url} -> HTTP {status}: {detail}"), status, detail=detail)
        try:
            return parse(response.json())
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            raise _Retryable(f"malformed JSON body ({_short(str(error), 80)})", status=status) from None
        except (MalformedResponse, KeyError, IndexError, TypeError) as error:
            raise _Retryable(f"unexpected response shape ({_short(str(error), 80)})", status=status) from None


Job = Callable[[AsyncApi], Awaitable[T]]


def run_one(config: ClientConfig, job: Job[T], stats: ClientStats | None = None) -> T:
    """One job to completion in a private event loop (probe, model list)."""
    for _, result in run_all(config, [job], stats):
        return result
    raise AssertionError("run_all yielded nothing for one job")


def run_all(config: ClientConfig, jobs: Sequence[Job[T]], stats: ClientStats | None = None) -> Iterator[tuple[int, T]]:
    """(index, result) as jobs finish, at most `concurrency` in flight.

    The event loop is private and driven from this generator, so the backend stays a plain
    iterator for the scheduler; it pauses while the caller handles a result (a cache write).
    The first failure is raised after the results finished alongside it have been yielded.
    """
    if not jobs:
        return
    loop = asyncio.new_event_loop()
    tasks: list[asyncio.Task] = []
    api_box: list[AsyncApi] = []
    try:
        async def start() -> None:
            api_box.append(AsyncApi(config, stats))

        loop.run_until_complete(start())
        api = api_box[0]
        slots = asyncio.Semaphore(config.concurrency)

        async def one(index: int, job: Job[T]) -> tuple[int, T]:
            async with slots:
                return index, await job(api)

        tasks = [loop.create_task(one(i, job)) for i, job in enumerate(jobs)]
        pending: set[asyncio.Task] = set(tasks)
        while pending:
            done, pending = loop.run_until_complete(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
            failures = [t.exception() for t in done if t.exception() is not None]
            for task in done:
                if task.exception() is None:
                    yield task.result()
            if failures:
                raise failures[0]  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        if api_box:
            loop.run_until_complete(api_box[0].aclose())
        loop.close()
