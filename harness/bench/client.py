"""The streaming OpenAI-compatible client of `harness bench --endpoint`.

One request = one POST with `stream: true`; `http.py` records the read time of every SSE event
and this module turns them into a Timeline after the response ends:

- a content token is text in `choices[0].text` (completions) or `choices[0].delta.content` /
  `reasoning_content` (chat); a role-only chunk, an empty chunk and the trailing usage chunk
  (`choices: []`) are not tokens;
- a chunk that carries several tokens counts as that many, all at its read time. The number of
  tokens in a chunk comes from continuous usage (vLLM's `continuous_usage_stats`) when the
  server sends it, else from the chunk's logprobs, else from the tokenizer, else 1;
- the output token count is the server's `usage.completion_tokens` when it reports usage
  (`stream_options.include_usage`), else the tokenizer's count of the text, else the tokens
  seen in chunks; `Timeline.token_source` says which.

`probe()` runs before the load: it checks that the endpoint answers, that it serves the model,
and which `stream_options` it accepts, and turns anything that stops a run into a UsageError.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from harness.bench.datasets import BenchPrompt
from harness.bench.http import ConnectionPool, HttpError, Origin, Response
from harness.bench.metrics import Timeline
from harness.core.errors import UsageError
from harness.core.redact import split_userinfo

log = logging.getLogger(__name__)

try:  # parsing is off the hot path, but orjson makes finishing a 64-stream level cheaper
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads

PROBE_TIMEOUT_S = 120.0  # the test request may be slower than --timeout allows a measured one
STREAM_OPTION_LEVELS = (
    {"include_usage": True, "continuous_usage_stats": True},
    {"include_usage": True},
    None,
)


@dataclass(frozen=True)
class Capabilities:
    stream_options: dict | None  # what the server accepted
    reports_usage: bool
    continuous_usage: bool
    served_models: tuple[str, ...]


@dataclass
class _Chunk:
    ns: int
    text: str
    tokens: int | None  # known from continuous usage or logprobs


def _error_message(response: Response) -> str:
    text = bytes(response.body).decode("utf-8", "replace")
    try:
        payload = json.loads(text)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        text = str(message if message is not None else payload)
    except ValueError:
        pass
    return f"HTTP {response.status}: {' '.join(text.split())[:200]}"


def parse_events(events: list[tuple[int, bytes]]) -> tuple[list[_Chunk], dict | None, str | None]:
    """SSE payloads -> (content chunks, last usage seen, error event message)."""
    chunks: list[_Chunk] = []
    usage: dict | None = None
    error: str | None = None
    previous = 0
    for ns, payload in events:
        if payload == b"[DONE]" or not payload:
            continue
        try:
            obj = _loads(payload)
        except ValueError:
            error = error or f"unparseable stream event: {payload[:80]!r}"
            continue
        if not isinstance(obj, dict):
            continue
        if obj.get("error") is not None:
            err = obj["error"]
            error = str(err.get("message", err) if isinstance(err, dict) else err)[:200]
            continue
        chunk_usage = obj.get("usage")
        choices = obj.get("choices") or ()
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            text = (delta.get("content") or delta.get("reasoning_content") or "") if delta else (choice.get("text") or "")
            if text:
                tokens = None
                if chunk_usage and chunk_usage.get("completion_tokens") is not None:
                    tokens = int(chunk_usage["completion_tokens"]) - previous
                elif isinstance(choice.get("logprobs"), dict):
                    logprobs = choice["logprobs"]
                    listed = logprobs.get("content") or logprobs.get("tokens")
                    tokens = len(listed) if listed else None
                chunks.append(_Chunk(ns, text, tokens if tokens and tokens > 0 else None))
        if chunk_usage:
            usage = chunk_usage
            if chunk_usage.get("completion_tokens") is not None:
                previous = int(chunk_usage["completion_tokens"])
    return chunks, usage, error


Counter_ = Callable[[list[str]], list[int]]


def build_timeline(index: int, request_id: str, send_ns: int, response: Response, prompt: BenchPrompt,
                   count_tokens: Counter_ | None) -> Timeline:
    chunks, usage, error = parse_events(response.events)
    if count_tokens is not None and any(c.tokens is None for c in chunks):
        unknown = [c for c in chunks if c.tokens is None]
        for c, n in zip(unknown, count_tokens([c.text for c in unknown])):
            c.tokens = max(1, n)
    token_ns: list[int] = []
    for c in chunks:
        token_ns.extend([c.ns] * (c.tokens or 1))
    if usage and usage.get("completion_tokens") is not None:
        output, source = int(usage["completion_tokens"]), "usage"
        input_tokens = int(usage["prompt_tokens"]) if usage.get("prompt_tokens") is not None else prompt.input_len
    elif count_tokens is not None:
        output, source = count_tokens(["".join(c.text for c in chunks)])[0], "tokenizer"
        input_tokens = prompt.input_len
    else:
        output, source, input_tokens = len(token_ns), "chunks", prompt.input_len
    content_type = response.headers.get("content-type", "")
    if error is None and not response.events and not content_type.startswith("text/event-stream"):
        error = f"the server answered without streaming (content-type {content_type or '?'!r})"
    return Timeline(index=index, send_ns=send_ns, end_ns=response.end_ns, token_ns=token_ns, input_tokens=input_tokens,
                    output_tokens=output, token_source=source, error=error, request_id=request_id)


@dataclass
class PendingTimeline:
    """A finished response whose events are parsed only when the level is over."""

    index: int
    request_id: str
    send_ns: int
    response: Response
    prompt: BenchPrompt
    count_tokens: Counter_ | None
    error: str | None = None  # the stream was cut off
    warmup: bool = False

    def finish(self) -> Timeline:
        r = self.response
        if r.status != 200:
            timeline = Timeline(index=self.index, send_ns=self.send_ns, end_ns=r.end_ns or r.first_byte_ns or self.send_ns,
                                input_tokens=self.prompt.input_len, error=_error_message(r), request_id=self.request_id)
        else:
            timeline = build_timeline(self.index, self.request_id, self.send_ns, r, self.prompt, self.count_tokens)
            if self.error is not None:
                timeline.error = self.error
        timeline.warmup = self.warmup
        return timeline


class OpenAIStreamClient:
    """Streams completions or chat completions from one endpoint and times them."""

    def __init__(self, endpoint: str, model: str, *, api: str = "completions", api_key: str | None = None,
                 ignore_eos: bool = False, timeout: float = 600.0, temperature: float = 0.0,
                 count_tokens: Counter_ | None = None, extra_body: dict | None = None) -> None:
        endpoint, credentials = split_userinfo(endpoint)  # user:password@ is sent as Basic auth, never shown
        try:
            self.origin = Origin.parse(endpoint)
        except ValueError as exc:
            raise UsageError(f"--endpoint: {exc}") from None
        if api not in ("completions", "chat"):
            raise UsageError(f"--api must be completions or chat, got {api!r}")
        self.endpoint, self.model, self.api = endpoint, model, api
        self.ignore_eos, self.timeout, self.temperature = ignore_eos, timeout, temperature
        self.count_tokens = count_tokens
        self.extra_body = dict(extra_body or {})
        self.stream_options: dict | None = STREAM_OPTION_LEVELS[0]
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream", "User-Agent": "harness-bench"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        elif credentials:
            self.headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.pool = ConnectionPool(self.origin)
        self.capabilities: Capabilities | None = None
        self._bodies: dict[int, tuple[BenchPrompt, bytes]] = {}
        self._prefix: bytes | None = None

    @property
    def path(self) -> str:
        return "/chat/completions" if self.api == "chat" else "/completions"

    def body(self, prompt: BenchPrompt, max_tokens: int | None = None) -> bytes:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens or prompt.output_len,
                                "temperature": self.temperature, "stream": True}
        if self.api == "chat":
            body["messages"] = [dict(m) for m in prompt.messages] if prompt.messages else [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if self.stream_options is not None:
            body["stream_options"] = self.stream_options
        if self.ignore_eos:
            body["ignore_eos"] = True  # vLLM, llama.cpp and TGI extension: generate exactly max_tokens
        body.update(self.extra_body)
        return json.dumps(body).encode()

    def _raw(self, prompt: BenchPrompt, request_id: str) -> bytes:
        # Bodies are encoded once per prompt: the load cycles through the same prompts, and
        # every microsecond spent here delays the reads of the other streams.
        cached = self._bodies.get(id(prompt))
        if cached is None or cached[0] is not prompt:
            cached = (prompt, self.body(prompt))
            self._bodies[id(prompt)] = cached
        body = cached[1]
        if self._prefix is None:
            self._prefix = self.pool.build("POST", self.path, self.headers, None)[:-2]  # keep the head open
        return self._prefix + b"X-Harness-Request-Id: %s\r\nContent-Length: %d\r\n\r\n" % (request_id.encode(), len(body)) + body

    async def stream(self, prompt: BenchPrompt, index: int, request_id: str) -> Timeline | PendingTimeline:
        """Send one request; the returned object's finish() gives the Timeline (parsed later)."""
        raw = self._raw(prompt, request_id)
        send_ns = perf_counter_ns()
        try:
            response = await self.pool.send(raw, stream=True, timeout=self.timeout)
        except HttpError as exc:
            if exc.response is not None and exc.response.status == 200:  # cut off mid-stream: keep what came
                return PendingTimeline(index, request_id, send_ns, exc.response, prompt, self.count_tokens, error=str(exc))
            return Timeline(index=index, send_ns=send_ns, end_ns=perf_counter_ns(), input_tokens=prompt.input_len,
                            error=str(exc), request_id=request_id)
        return PendingTimeline(index, request_id, send_ns, response, prompt, self.count_tokens)

    # ---- before the run ------------------------------------------------------------------

    async def served_models(self) -> tuple[str, ...]:
        try:
            response = await self.pool.request("GET", "/models", None, dict(self.headers), stream=False, timeout=30)
        except HttpError as exc:
            raise UsageError(f"cannot reach endpoint {self.endpoint}: {exc}") from None
        if response.status in (401, 403):
            raise UsageError(f"endpoint {self.endpoint} refused the credentials ({_error_message(response)}); "
                             "set OPENAI_API_KEY or --api-key")
        if response.status != 200:
            return ()  # not every server lists models; the probe request will tell
        try:
            data = json.loads(bytes(response.body)).get("data") or []
            return tuple(str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id") is not None)
        except (ValueError, AttributeError):
            return ()

    async def probe(self, prompt: BenchPrompt) -> Capabilities:
        """Fail fast with one clear line when the run cannot start; learn the usage options."""
        served = await self.served_models()
        # The listing is advisory (servers that load on demand, as transformers serve, list what they have cached):
        # the test request decides, and an unlisted model that answers it gets a warning.
        unlisted = f" (it lists: {', '.join(served[:10])})" if served and self.model not in served else ""
        last = ""
        for options in STREAM_OPTION_LEVELS:
            self.stream_options = options
            test_prompt = BenchPrompt(prompt.text, prompt.token_ids, prompt.input_len, 4, prompt.messages)
            self._bodies.clear()
            try:  # the same bytes as a request of the load, so what the server rejects shows here
                response = await self.pool.send(self._raw(test_prompt, "harness-probe"), stream=True,
                                                timeout=max(self.timeout, PROBE_TIMEOUT_S))
            except HttpError as exc:
                if exc.response is not None and exc.response.status:
                    raise UsageError(f"endpoint {self.endpoint} did not finish a 4-token test request: {exc}") from None
                raise UsageError(f"cannot reach endpoint {self.endpoint}: {exc}") from None
            if response.status == 200:
                chunks, usage, error = parse_events(response.events)
                if error:
                    raise UsageError(f"endpoint {self.endpoint} streamed an error on a test request: {error}")
                continuous = any(c.tokens is not None for c in chunks) and bool(options and options.get("continuous_usage_stats"))
                self.capabilities = Capabilities(options, usage is not None, continuous, served)
                self._bodies.clear()  # bodies built while probing carry other stream_options
                if unlisted:
                    log.warning("endpoint %s answers for model %r, which it does not list%s", self.endpoint, self.model, unlisted)
                return self.capabilities
            last = _error_message(response)
            if response.status == 404:
                raise UsageError(f"endpoint {self.endpoint}{self.path} does not serve model {self.model!r}{unlisted}: {last}")
            if response.status in (401, 403):
                raise UsageError(f"endpoint {self.endpoint} refused the credentials: {last}; set OPENAI_API_KEY or --api-key")
            if response.status not in (400, 422):
                raise UsageError(f"endpoint {self.endpoint} failed a test request: {last}")
            if self.ignore_eos and "ignore_eos" in last:
                raise UsageError(f"endpoint {self.endpoint} does not accept ignore_eos: {last}")
        raise UsageError(f"endpoint {self.endpoint} rejected a plain streaming request: {last}")

    def describe(self) -> dict:
        caps = self.capabilities
        return {"backend": "openai-http", "endpoint": self.endpoint, "model": self.model, "api": self.api,
                "ignore_eos": self.ignore_eos, "stream_options": caps.stream_options if caps else None,
                "reports_usage": caps.reports_usage if caps else None,
                "continuous_usage": caps.continuous_usage if caps else None}

    async def aclose(self) -> None:
        self.pool.close()
