"""The scheduler owns speed and durability between tasks and a backend.

It deduplicates identical requests across tasks (by content hash), serves what it can from the
cache, hands the rest to the backend one request kind at a time (the backend orders them
longest-first and shares common contexts), and writes answers to the cache as batches finish,
so a killed run loses at most the batch in flight and a re-run recomputes nothing it has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from harness.backends.base import Backend
from harness.core.progress import make_progress
from harness.core.requests import Request, Response, request_hash, response_from_json, response_to_json
from harness.store.db import Store

log = logging.getLogger("harness.scheduler")
OnFlush = Callable[[dict[str, Response]], None]
KIND_ORDER = ("loglikelihood", "loglikelihood_rolling", "generate")
FLUSH_EVERY_S = 2.0
FLUSH_EVERY_N = 256


@dataclass
class ScheduleStats:
    requested: int = 0
    unique: int = 0
    cached: int = 0
    computed: int = 0
    backend_seconds: float = 0.0


class Scheduler:
    def __init__(self, store: Store, backend: Backend, model_fingerprint: str, show_progress: bool = True) -> None:
        self.store = store
        self.backend = backend
        self.fingerprint = model_fingerprint
        self.show_progress = show_progress
        self.stats = ScheduleStats()

    def answer(self, requests: Iterable[Request], on_flush: OnFlush | None = None) -> dict[str, Response]:
        """Answers keyed by request hash, for every request given.

        `on_flush(answers)` is called after each write to the cache (and once for the cached
        answers), so the caller can store the documents that became complete.
        """
        self.on_flush = on_flush or (lambda answers: None)
        unique: dict[str, Request] = {}
        for request in requests:
            self.stats.requested += 1
            unique.setdefault(request_hash(request), request)
        self.stats.unique = len(unique)
        answers: dict[str, Response] = {
            h: response_from_json(unique[h], value) for h, value in self.store.cache_get(self.fingerprint, list(unique)).items()
        }
        self.stats.cached = len(answers)
        self.on_flush(answers)
        self.store.release()  # the backend computes without holding the database: readers come in
        missing = [(h, r) for h, r in unique.items() if h not in answers]
        if missing:
            self._compute(missing, answers)
        return answers

    def _compute(self, missing: list[tuple[str, Request]], answers: dict[str, Response]) -> None:
        by_kind = {kind: [(h, r) for h, r in missing if r.kind == kind] for kind in KIND_ORDER}
        progress = make_progress() if self.show_progress else None
        if progress:
            progress.start()
        try:
            for kind, items in by_kind.items():
                if not items:
                    continue
                bar = progress.add_task(f"{kind} ({self.backend.name})", total=len(items)) if progress else None
                advance: Callable[[int], None] = (lambda k, b=bar: progress.advance(b, k)) if progress else (lambda k: None)
                self._run_kind(kind, items, answers, advance)
        finally:
            if progress:
                progress.stop()

    def _results(self, kind: str, requests: Sequence[Request], advance: Callable[[int], None]) -> Iterator[tuple[int, Response]]:
        method = {"loglikelihood": self.backend.loglikelihood, "loglikelihood_rolling": self.backend.loglikelihood_rolling,
                  "generate": self.backend.generate}[kind]
        return method(requests, advance)  # type: ignore[arg-type]

    def _run_kind(self, kind: str, items: list[tuple[str, Request]], answers: dict[str, Response], advance: Callable[[int], None]) -> None:
        requests = [r for _, r in items]
        pending: list[tuple[str, str, object]] = []
        last_flush = time.monotonic()
        started = time.perf_counter()
        try:
            for index, result in self._results(kind, requests, advance):
                h, request = items[index]
                answers[h] = result
                pending.append((h, kind, response_to_json(request, result)))
                self.stats.computed += 1
                if len(pending) >= FLUSH_EVERY_N or time.monotonic() - last_flush >= FLUSH_EVERY_S:
                    self._flush(pending, answers)
                    pending, last_flush = [], time.monotonic()
        finally:
            # whatever finished is kept, even when the backend fails half-way
            self.store.cache_put(self.fingerprint, pending)
            self.stats.backend_seconds += time.perf_counter() - started
        self.on_flush(answers)
        self.store.release()

    def _flush(self, pending: list[tuple[str, str, object]], answers: dict[str, Response]) -> None:
        self.store.cache_put(self.fingerprint, pending)
        log.info("cached %d answers (%d computed so far)", len(pending), self.stats.computed)
        self.on_flush(answers)
        self.store.release()
