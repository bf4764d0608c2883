"""Which model the server serves: its `/models` listing (advisory) and, where that does not name
the model, a one-token request that does.

Servers that load models on demand (transformers serve, Ollama, LiteLLM-style proxies) list
only some of what they answer for: transformers serve lists its Hugging Face hub cache, never a
local directory it loads by path, and answers 500 to `/models` where that cache does not exist.
So a model missing from the listing is not refused; it is asked for one token instead. That
answer decides: a server saying it has no such model (404, or an error naming the model) and a
server failing the request after quick retries are both refused before the run, with the model's
name in the line; an answer gives the model the server reports (`"model"` of the completion),
which goes into the fingerprint in place of the listing entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.backends.openai.http import ApiError, AsyncApi

# Model-list fields that identify what is served. vLLM stamps `created` (and its `permission`
# entries) with the time of the request, so those would change the cache key on every run.
STABLE_MODEL_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len", "meta")
# Answers to the one-token request that mean "this endpoint does not exist here" (a chat-only
# server), unless the message names the model: then the next endpoint is tried.
NO_ENDPOINT = {404, 405, 501}
# How servers say a model is not theirs: vLLM and OpenAI "The model `x` does not exist", Ollama
# 'model "x" not found', LiteLLM "Invalid model name", transformers serve with a pinned
# FORCE_MODEL "Server is pinned to 'y'; requested 'x'".
MODEL_MISSING = re.compile(r"\bmodel\b.{0,200}\b(not found|does not exist|doesn't exist|not available|not served)\b"
                           r"|\b(unknown|invalid|no such) model\b|\bpinned to\b", re.IGNORECASE)
PROBE_PROMPT = "Hello"


@dataclass(frozen=True)
class Listing:
    """What `/models` said: the entries by id, or None with the reason there is no usable listing."""

    entries: dict[str, dict] | None
    reason: str = ""

    def names(self, limit: int = 8) -> str:
        return ", ".join(sorted(self.entries or {})[:limit]) or "none"


def listing_from_body(body: Any) -> Listing:
    return Listing({str(m.get("id")): m for m in body if isinstance(m, dict)})


def listing_from_error(error: ApiError) -> Listing | None:
    """A listing that does not exist (404) or fails (5xx after quick retries) is no listing, not
    a reason to refuse; None for the errors that are (unreachable, 401, 403)."""
    if error.status == 404:
        return Listing(None, "/models does not exist")
    if error.status is None and error.last_status is not None and error.last_status >= 500:
        return Listing(None, f"/models fails (HTTP {error.last_status})")
    return None


def stable_entry(entry: dict) -> dict:
    return {k: entry[k] for k in STABLE_MODEL_FIELDS if k in entry}


def model_missing(error: ApiError) -> bool:
    """Did the server answer that it has no such model (as opposed to failing, or lacking the endpoint)?"""
    return error.status is not None and 400 <= error.status < 500 and bool(MODEL_MISSING.search(error.detail))


def _reported_model(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


async def ask_for_model(api: AsyncApi, model: str) -> str | None:
    """One greedy token from /completions, or from /chat/completions where the server has no
    /completions; returns the model the answer names (None if it names none)."""
    requests: list[tuple[str, dict[str, Any]]] = [("completions", {"prompt": PROBE_PROMPT}),
                                                  ("chat/completions", {"messages": [{"role": "user", "content": PROBE_PROMPT}]})]
    for index, (path, fields) in enumerate(requests):
        payload = {"model": model, "max_tokens": 1, "temperature": 0, **fields}
        try:
            return await api.call("POST", path, payload, _reported_model)
        except ApiError as error:
            last_endpoint = index == len(requests) - 1
            if last_endpoint or error.status not in NO_ENDPOINT or model_missing(error):
                raise
    raise AssertionError("unreachable: the last request returns or raises")


def unlisted_failure(base_url: str, model: str, listing: Listing, error: ApiError) -> str:
    """The one line refusing a model the listing does not name and the one-token request could not use."""
    where = f"it lists: {listing.names()}" if listing.entries is not None else listing.reason
    if model_missing(error):
        return f"openai: the server at {base_url} does not serve model {model!r} ({where}; asked for it: {error})"
    return (f"openai: the server at {base_url} does not list model {model!r} ({where}) and failed a one-token "
            f"request for it: {error}")


def unlisted_warning(base_url: str, model: str, listing: Listing, reported: str | None) -> str:
    where = f"does not list model {model!r} (it lists: {listing.names()})" if listing.entries is not None \
        else f"has no model listing ({listing.reason})"
    answered = f"answered a one-token request as model {reported!r}" if reported else "answered a one-token request"
    return f"openai: the server at {base_url} {where}; the listing is advisory and it {answered}, so the run goes ahead"
