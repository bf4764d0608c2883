"""The one judge client: MT-Bench grading and the RAG metrics ask their judge through it.

The judge is any backend spec. Its answers are cached in the results database under the
judge's fingerprint + the request hash, in the same cache table as every model answer. A judge
that times out, errors, refuses or answers in the wrong format never stops a run: each such
reply is an invalid judgment, counted by kind, and what needed it is missing for that sample.
Failed requests (timeouts, errors) are not cached, so a re-run asks again; a reply that arrived
but does not parse is cached, because asking the same judge again gives it again.

Failure isolation: a backend that raises part-way through a batch cancels the rest of it, so
what is left is halved and asked again until the failing request stands alone; one stalled
request costs a few timeouts, not the batch. After GIVE_UP_AFTER failed calls in a row the rest
is marked failed unasked: a judge that died mid-run ends the run quickly.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from harness.backends.base import Backend
from harness.core.errors import UsageError
from harness.core.progress import make_progress
from harness.core.requests import Generate, request_hash
from harness.store.db import Store

log = logging.getLogger("harness.judge")
M = TypeVar("M", bound=BaseModel)
INVALID_KINDS = ("timeout", "error", "refusal", "format")
GIVE_UP_AFTER = 8  # consecutive failed judge calls before the rest of a batch is marked failed unasked
REFUSAL = re.compile(r"\b(I'm sorry|I am sorry|I can(?:no|')t|I won't|I am unable|I'm unable|as an AI)\b", re.IGNORECASE)
FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Failure:
    """An invalid judgment: kind is one of INVALID_KINDS."""

    kind: str
    detail: str


Reply = list[str] | Failure  # n texts, or why there are none


@dataclass
class JudgeStats:
    requested: int = 0  # requests asked for, repeats included
    requests: int = 0  # unique requests
    cached: int = 0
    computed: int = 0  # answered by the backend in this process
    failed: int = 0  # requests with no reply (timeouts, errors, given up)
    judgments: int = 0  # texts parsed (a request with n=3 gives 3)
    invalid: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """The RAG view: unique requests, judgments and invalid ones by kind."""
        return {"requests": self.requests, "cached": self.cached, "judgments": self.judgments,
                "invalid": sum(self.invalid.values()), "invalid_by_kind": {k: self.invalid.get(k, 0) for k in INVALID_KINDS}}

    def calls(self) -> dict:
        """The MT-Bench view: what was asked of the judge and how it went."""
        return {"requested": self.requested, "cached": self.cached, "computed": self.computed, "failed": self.failed}


TIMEOUT_TEXT = re.compile(r"time(d)?[ -]?out|no answer within|deadline", re.IGNORECASE)


def failure_kind(exc: BaseException) -> str:
    """Backends wrap their client's errors (the openai backend raises UsageError), so the text counts too."""
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    return "timeout" if TIMEOUT_TEXT.search(names) or TIMEOUT_TEXT.search(str(exc)) else "error"


def extract_json(text: str) -> object | None:
    """The first JSON value in a reply: whole text, a ``` fenced block, or from the first brace."""
    candidates = [text.strip()] + [m.strip() for m in FENCE.findall(text)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            return decoder.raw_decode(text, match.start())[0]
        except ValueError:
            continue
    return None


def parse_reply(text: object, model: type[M]) -> M | Failure:
    """A reply text -> the output model, or a Failure of kind refusal or format."""
    if not isinstance(text, str) or not text.strip():
        return Failure("format", "empty reply")
    value = extract_json(text)
    if value is None:
        kind = "refusal" if REFUSAL.search(text) else "format"
        return Failure(kind, text.strip()[:200])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "reply"
        return Failure("format", f"{where}: {first.get('msg', 'invalid')}")


class JudgeClient:
    """One judge backend plus the cache; `complete` answers a batch of chat requests."""

    def __init__(self, backend: Backend, store: Store | None = None, show_progress: bool = False, check: bool = True) -> None:
        if check:
            backend.check({"generate"})  # a server backend asks its server now: unreachable is an input error
            # `supports` may be a property that probes a server for loglikelihoods; only a declared set is read
            declared = getattr(type(backend), "supports", None)
            if isinstance(declared, frozenset) and "generate" not in declared:
                raise UsageError(f"judge backend {backend.name} cannot generate text")
        self.backend = backend
        self.store = store
        self.show_progress = show_progress
        self.fingerprint = backend.fingerprint()
        self.stats = JudgeStats()
        self.failures_in_row = 0
        self.last_error = ""

    def complete(self, requests: Sequence[Generate], label: str = "judge") -> dict[str, Reply]:
        """Replies keyed by request hash; failures are values, never exceptions."""
        self.failures_in_row = 0  # each call gives the judge a fresh chance
        unique: dict[str, Generate] = {}
        for r in requests:
            unique.setdefault(request_hash(r), r)
        self.stats.requested += len(requests)
        self.stats.requests += len(unique)
        replies: dict[str, Reply] = {}
        if self.store is not None and unique:
            for h, value in self.store.cache_get(self.fingerprint, list(unique)).items():
                if isinstance(value, list) and all(isinstance(t, str) for t in value):
                    replies[h] = value
        self.stats.cached += len(replies)
        missing = [(h, r) for h, r in unique.items() if h not in replies]
        if missing:
            self._ask(missing, replies, label)
        return replies

    def _ask(self, missing: list[tuple[str, Generate]], replies: dict[str, Reply], label: str) -> None:
        progress = make_progress() if self.show_progress else None
        bar = progress.add_task(f"{label} ({self.backend.name})", total=len(missing)) if progress else None
        advance = (lambda k: progress.advance(bar, k)) if progress and bar is not None else (lambda k: None)
        if progress:
            progress.start()
        try:
            self._settle(missing, replies, advance)
        finally:
            if progress:
                progress.stop()

    def _settle(self, items: list[tuple[str, Generate]], replies: dict[str, Reply], advance) -> None:
        """Answer every item or give it a Failure. A backend that raises part-way cancels the rest of
        its batch, so what is left is halved and retried until the request that fails is alone."""
        if self.failures_in_row >= GIVE_UP_AFTER:
            for h, _ in items:
                replies[h] = Failure("error", f"not asked: {self.failures_in_row} judge calls failed in a row ({self.last_error})")
                self.stats.failed += 1
                advance(1)
            return
        failure = self._batch(items, replies, advance)
        left = [item for item in items if item[0] not in replies]
        if not left:
            return
        if len(items) == 1:
            replies[left[0][0]] = failure or Failure("error", "the backend gave no reply")
            self.failures_in_row += 1
            self.stats.failed += 1
            log.warning("judge call failed: %s", self.last_error)
            advance(1)
            return
        middle = (len(left) + 1) // 2
        self._settle(left[:middle], replies, advance)
        if left[middle:]:
            self._settle(left[middle:], replies, advance)

    def _batch(self, items: list[tuple[str, Generate]], replies: dict[str, Reply], advance) -> Failure | None:
        """Ask the backend for a batch; what it answered lands in `replies`, the exception (if any) is returned."""
        fresh: list[tuple[str, str, object]] = []
        try:
            for index, texts in self.backend.generate([r for _, r in items], advance):
                h, request = items[index]
                self.failures_in_row = 0
                self.stats.computed += 1
                if isinstance(texts, list) and all(isinstance(t, str) for t in texts) and texts:
                    replies[h] = texts
                    fresh.append((h, "generate", texts))
                else:
                    replies[h] = Failure("error", f"backend returned {type(texts).__name__}, not a list of texts")
        except Exception as exc:  # a judge that fails must not stop the run
            failure = Failure(failure_kind(exc), f"{type(exc).__name__}: {exc}"[:300])
            self.last_error = failure.detail
            log.info("judge request failed (%s): %s", failure.kind, failure.detail)
            return failure
        finally:
            if self.store is not None:
                self.store.cache_put(self.fingerprint, fresh)
                self.store.release()  # the judge's next call runs without holding the database
        return None

    def texts(self, reply: Reply, n: int) -> list[str | Failure]:
        """A reply as n judgments: a failed request fails all n, a short reply fails the missing ones."""
        out: list[str | Failure] = [reply] * n if isinstance(reply, Failure) else list(reply[:n])
        out += [Failure("format", "fewer replies than requested")] * (n - len(out))
        return out

    def parse(self, reply: Reply, model: type[M], n: int = 1) -> list[M | Failure]:
        """Parse each of the n judgments of a reply and count the invalid ones."""
        parsed = [t if isinstance(t, Failure) else parse_reply(t, model) for t in self.texts(reply, n)]
        self.stats.judgments += n
        for p in parsed:
            if isinstance(p, Failure):
                self.stats.invalid[p.kind] += 1
        return parsed
