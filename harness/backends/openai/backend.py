"""The `openai` backend: any OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI, Ollama, hosted).

`openai:MODEL@BASE_URL`, e.g. `openai:smollm2@http://127.0.0.1:8000/v1`, with
`--model-args concurrency=N,timeout=S,max_retries=N,api_key_env=NAME,probe=on|off`.

Loglikelihoods come from `/v1/completions` with `echo=true, logprobs=1` (openai_logprobs.py);
generation from `/v1/completions` for prompts and `/v1/chat/completions` for messages (the server
applies the chat template). Requests run concurrently over a retrying client (openai_http.py) and
are yielded as they finish. Construction touches no network; the server is first asked when the
evaluator calls `check()` (or reads `supports`), which lists its models and, for loglikelihood
tasks, runs the prompt-logprob probe (openai_probe.py). The listing is advisory: a model it does
not name is asked for one token instead, and refused only if that fails (served.py).

The API key is read from the environment variable named by `api_key_env` (default
OPENAI_API_KEY) when a client is built, and is never stored in the spec, describe(), the
fingerprint, a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harness.backends.base import Backend, ModelSpec, Progress
from harness.backends.openai.http import ApiError, AsyncApi, ClientConfig, ClientStats, MalformedResponse, run_all, run_one
from harness.backends.openai.logprobs import continuation_result, parse_echo, rolling_logprob
from harness.backends.openai.probe import ProbeResult, run_probe
from harness.backends.openai.served import (
    Listing,
    ask_for_model,
    listing_from_body,
    listing_from_error,
    stable_entry,
    unlisted_failure,
    unlisted_warning,
)
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.redact import split_userinfo, strip_userinfo
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling

log = logging.getLogger("harness.openai")

TARGET_PATTERN = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")
LOGLIKELIHOOD_KINDS = frozenset({"loglikelihood", "loglikelihood_rolling"})
ARG_HELP = {
    "concurrency": "requests in flight (default 8)",
    "timeout": "seconds per request attempt (default 300)",
    "max_retries": "retries of a request on 429, 5xx, timeouts, cut or malformed answers (default 6)",
    "api_key_env": "environment variable holding the API key (default OPENAI_API_KEY; unset is fine locally)",
    "probe": "on (default) | off: skip the check that prompt logprobs are log p(token | previous tokens)",
    "batch_size": "accepted for --batch-size and ignored: concurrency sets the parallelism",
    "body.NAME": "extra field of generation requests, value parsed as JSON if it can be (e.g. body.repeat_penalty=1.0 "
                 "for llama.cpp's server, whose default 1.1 makes greedy output differ from the model's argmax)",
}
EXTRA_BODY_PREFIX = "body."
# Reaching the server at all: a couple of quick retries, not the full schedule of a request.
REACH_RETRIES = 2
# Hosted APIs accept at most 4 stop sequences; the rest are applied to the text here.
MAX_SERVER_STOPS = 4


@dataclass(frozen=True)
class OpenAIOptions:
    model: str
    base_url: str  # without credentials: what is shown, stored and fingerprinted
    concurrency: int = 8
    timeout_s: float = 300.0
    max_retries: int = 6
    api_key_env: str = "OPENAI_API_KEY"
    api_key_env_given: bool = False
    probe: bool = True
    extra_body: tuple[tuple[str, Any], ...] = ()  # server-specific sampling fields, sent with generation requests
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)  # the URL's user:password@, for requests only


def _usage(message: str) -> UsageError:
    valid = "; ".join(f"{key}={help_}" for key, help_ in ARG_HELP.items())
    return UsageError(f"{message}; valid openai model args: {valid}")


def _number(key: str, value: str, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise _usage(f"bad {key}={value!r}: expected a number >= {minimum:g}")
    return number


def parse_options(spec: ModelSpec) -> OpenAIOptions:
    match = TARGET_PATTERN.match(spec.target)
    if not match:
        raise UsageError(f"malformed openai spec {spec.text!r}: expected openai:MODEL@BASE_URL, "
                         "e.g. openai:smollm2@http://127.0.0.1:8000/v1")
    args = spec.args
    if any(k.lower() in ("api_key", "key", "token") for k in args):
        # the value is deliberately not repeated: it would land in shell history and logs
        raise UsageError("do not pass API keys in --model-args: export the key and name the variable with api_key_env=NAME")
    unknown = sorted(k for k in set(args) - set(ARG_HELP) if not k.startswith(EXTRA_BODY_PREFIX))
    if unknown:
        raise _usage(f"unknown openai model arg(s): {', '.join(unknown)}")
    probe = args.get("probe", "on").lower()
    if probe not in ("on", "off"):
        raise _usage(f"bad probe={probe!r}")
    env_name = args.get("api_key_env", "OPENAI_API_KEY")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env_name):
        raise _usage(f"bad api_key_env={env_name!r}: expected an environment variable name")
    base_url, basic_auth = split_userinfo(_checked_url(match["url"].rstrip("/")))
    return OpenAIOptions(
        model=match["model"], base_url=base_url, basic_auth=basic_auth,
        concurrency=_number("concurrency", args.get("concurrency", "8"), int, 1),
        timeout_s=_number("timeout", args.get("timeout", "300"), float, 0.1),
        max_retries=_number("max_retries", args.get("max_retries", "6"), int, 0),
        api_key_env=env_name, api_key_env_given="api_key_env" in args, probe=probe == "on",
        extra_body=tuple(sorted((k[len(EXTRA_BODY_PREFIX):], _json_or_text(v)) for k, v in args.items()
                                if k.startswith(EXTRA_BODY_PREFIX) and len(k) > len(EXTRA_BODY_PREFIX))),
    )


def _checked_url(url: str) -> str:
    """An http(s) URL with a host and a valid port (a malformed IPv6 host or port 99999 is an input error)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"openai: bad server URL {strip_userinfo(url)!r}: {exc}") from None
    if not parts.hostname:
        raise UsageError(f"openai: bad server URL {strip_userinfo(url)!r}: no host")
    if port == 0:
        raise UsageError(f"openai: bad server URL {strip_userinfo(url)!r}: port 0")
    return url


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [text.index(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


def _texts(body: Any, chat: bool) -> list[str]:
    choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
    texts = [(c["message"].get("content") or "") if chat else c["text"] for c in choices]
    if not all(isinstance(t, str) for t in texts):
        raise MalformedResponse("a choice's text is not a string")
    return texts


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(spec)
        self.stats = ClientStats()
        self._server: dict | None = None  # server_info(), once fetched
        self._probe: ProbeResult | None = None

    # -- the server ----------------------------------------------------------------------------

    def _config(self, max_retries: int | None = None) -> ClientConfig:
        o = self.options
        key = os.environ.get(o.api_key_env) or None
        if key is None and o.api_key_env_given:
            raise UsageError(f"openai: api_key_env={o.api_key_env} but that environment variable is not set")
        retries = o.max_retries if max_retries is None else max_retries
        return ClientConfig(o.base_url, o.timeout_s, retries, o.concurrency, api_key=key, basic_auth=o.basic_auth)

    def server_info(self) -> dict:
        """What identifies the served model, fetched once: its /models entry (stable fields), or for
        a model the listing does not name, the model the server reports answering one token
        (served.py says why the listing is advisory); raises UsageError where the server cannot
        be used for this model at all."""
        if self._server is None:
            listing = self._listing()
            entry = (listing.entries or {}).get(self.options.model)
            self._server = stable_entry(entry) if entry is not None else self._unlisted(listing)
        return self._server

    def _listing(self) -> Listing:
        config = self._config(min(REACH_RETRIES, self.options.max_retries))
        try:
            return run_one(config, lambda api: api.call("GET", "models", None, lambda b: listing_from_body(b["data"])),
                           self.stats)
        except ApiError as error:
            listing = listing_from_error(error)
            if listing is None:
                reach = "cannot reach" if error.status is None and error.last_status is None else "cannot use"
                raise UsageError(f"openai: {reach} the server at {self.options.base_url}: {error}") from None
            return listing

    def _unlisted(self, listing: Listing) -> dict:
        """Ask for one token with quick retries: a model the server cannot answer for fails here, in one
        line naming it, instead of on the run's first request after the full retry schedule."""
        o = self.options
        config = self._config(min(REACH_RETRIES, o.max_retries))
        try:
            reported = run_one(config, lambda api: ask_for_model(api, o.model), self.stats)
        except ApiError as error:
            raise UsageError(unlisted_failure(o.base_url, o.model, listing, error)) from None
        log.warning(unlisted_warning(o.base_url, o.model, listing, reported))
        return {"reported_model": reported}

    def probe(self) -> ProbeResult:
        """Runs once, on first use: do this server's echoed prompt logprobs mean what we sum?"""
        if self._probe is None:
            self.server_info()  # unreachable or wrong model: a clear error before the probe's
            if not self.options.probe:
                log.warning("openai: probe=off: prompt logprobs of %s are trusted unchecked", self.options.base_url)
                self._probe = ProbeResult(True, "skipped (probe=off)")
            else:
                self._probe = run_one(self._config(), lambda api: run_probe(api, self.options.model), self.stats)
        return self._probe

    @property
    def supports(self) -> frozenset[str]:  # type: ignore[override]
        """Generation always; loglikelihoods unless the probe ran and failed. The probe runs only
        when a run needs loglikelihoods (`check`): a generate-only run never waits for it."""
        refused = self._probe is not None and not self._probe.ok
        return frozenset({"generate"}) | (frozenset() if refused else LOGLIKELIHOOD_KINDS)

    def check(self, kinds: set[str]) -> None:
        self.server_info()
        needed = set(kinds) & LOGLIKELIHOOD_KINDS
        probe = self.probe() if needed else None
        if probe is not None and not probe.ok:
            hint = "; --model-args probe=off skips this check" if probe.skippable else ""
            raise UsageError(f"openai: {self.spec.text} cannot answer {', '.join(sorted(needed))} requests: "
                             f"{probe.reason}{hint}")

    # -- identity ------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        o = self.options
        identity = {"model": o.model, "base_url": o.base_url, "server": self.server_info()}
        if o.extra_body:  # they change the answers; absent, the key stays what it was
            identity["extra_body"] = dict(o.extra_body)
        return "openai:" + sha256_json(identity)

    def describe(self) -> dict:
        o = self.options
        return super().describe() | {
            "model": o.model, "base_url": o.base_url, "server_model": self._server,
            "probe": self._probe.as_dict() if self._probe else None,
            "concurrency": o.concurrency, "timeout_s": o.timeout_s, "max_retries": o.max_retries,
            "api_key_env": o.api_key_env, "http_attempts": self.stats.attempts, "http_retries": self.stats.retries,
        }

    # -- requests ------------------------------------------------------------------------------

    def _run(self, jobs: list, progress: Progress) -> Iterator[tuple[int, Any]]:
        try:
            for index, result in run_all(self._config(), jobs, self.stats):
                yield index, result
                progress(1)
        except ApiError as error:
            raise UsageError(f"openai: {error}") from None

    def _echo_job(self, prompt: str, parse: Any) -> Any:
        payload = {"model": self.options.model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                   "echo": True, "logprobs": 1}
        return lambda api: api.call("POST", "completions", payload, parse)

    def loglikelihood(self, requests: Sequence[Loglikelihood], progress: Progress) -> Iterator[tuple[int, LoglikelihoodResult]]:
        jobs, where = [], []
        for i, r in enumerate(requests):
            if not r.continuation:  # probability one, as the hf backend answers it
                yield i, LoglikelihoodResult(0.0, True)
                progress(1)
                continue
            prompt = r.context + r.continuation
            jobs.append(self._echo_job(prompt, lambda body, r=r, p=prompt: continuation_result(parse_echo(body, p), r.context, r.continuation)))
            where.append(i)
        for j, result in self._run(jobs, progress):
            yield where[j], result

    def loglikelihood_rolling(self, requests: Sequence[LoglikelihoodRolling], progress: Progress) -> Iterator[tuple[int, float]]:
        jobs, where = [], []
        for i, r in enumerate(requests):
            if not r.text:
                yield i, 0.0
                progress(1)
                continue
            jobs.append(self._echo_job(r.text, lambda body, t=r.text: rolling_logprob(parse_echo(body, t), t)))
            where.append(i)
        for j, result in self._run(jobs, progress):
            yield where[j], result

    def _generate_payload(self, r: Generate, n: int, seed: int | None) -> tuple[str, dict]:
        payload: dict[str, Any] = {"model": self.options.model, "max_tokens": r.max_tokens, "temperature": r.temperature, "n": n}
        if r.stop:
            payload["stop"] = list(r.stop[:MAX_SERVER_STOPS])
        if seed is not None:
            payload["seed"] = seed
        payload.update(self.options.extra_body)
        if r.messages is not None:
            payload["messages"] = [{"role": m.role, "content": m.content} for m in r.messages]
            return "chat/completions", payload
        payload["prompt"] = r.prompt
        return "completions", payload

    async def _generate_one(self, api: AsyncApi, r: Generate) -> list[str]:
        chat = r.messages is not None
        path, payload = self._generate_payload(r, r.n, r.seed)
        texts = await api.call("POST", path, payload, lambda body: _texts(body, chat))
        # Servers that ignore `n` (llama-cpp-python's) answer one choice: ask again for the rest,
        # each with its own seed so that seeded samples still differ.
        while len(texts) < r.n:
            seed = None if r.seed is None else r.seed + len(texts)
            path, payload = self._generate_payload(r, 1, seed)
            texts += (await api.call("POST", path, payload, lambda body: _texts(body, chat)))[:1]
        return [truncate_at_stop(t, r.stop) for t in texts[: r.n]]

    def generate(self, requests: Sequence[Generate], progress: Progress) -> Iterator[tuple[int, list[str]]]:
        jobs = [lambda api, r=r: self._generate_one(api, r) for r in requests]
        yield from self._run(jobs, progress)

