"""The scheduler: identical requests computed once, cached answers never recomputed, answers
kept when the backend fails half-way. The backend is the real hf one on the embedded model,
wrapped only to count what reaches it and to inject the failure."""

from __future__ import annotations

import pytest

from harness.backends.base import ModelSpec
from harness.backends.embedded import ensure_hf_dir
from harness.backends.hf.backend import HFBackend
from harness.core.requests import Loglikelihood, request_hash
from harness.run.scheduler import Scheduler
from harness.store.db import Store


class CountingBackend(HFBackend):
    def __init__(self, spec: ModelSpec, fail_after_batches: int | None = None) -> None:
        super().__init__(spec)
        self.received: list[Loglikelihood] = []
        self.fail_after_batches = fail_after_batches

    def loglikelihood(self, requests, progress):
        self.received.extend(requests)
        for batches, item in enumerate(super().loglikelihood(requests, progress)):
            if self.fail_after_batches is not None and batches >= self.fail_after_batches:
                raise RuntimeError("backend died")
            yield item


CONTEXTS = [f"Question {i}: what is {i} plus {i}?\nAnswer:" for i in range(6)]
REQUESTS = [Loglikelihood(c, f" {k}") for c in CONTEXTS for k in (1, 2)]


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec("hf", str(ensure_hf_dir()), {"batch_size": "1"})


def test_duplicates_are_computed_once_and_cache_is_reused(spec, db_path):
    store = Store(db_path)
    backend = CountingBackend(spec)
    scheduler = Scheduler(store, backend, "fp", show_progress=False)
    answers = scheduler.answer(REQUESTS + REQUESTS[:5])  # the same request from two "tasks"
    assert len(backend.received) == len(REQUESTS)
    assert set(answers) == {request_hash(r) for r in REQUESTS}
    assert scheduler.stats.requested == len(REQUESTS) + 5 and scheduler.stats.computed == len(REQUESTS)

    again = CountingBackend(spec)
    again._loaded = backend.load()
    scheduler2 = Scheduler(store, again, "fp", show_progress=False)
    assert scheduler2.answer(REQUESTS) == answers
    assert again.received == [] and again.forward_seconds == 0.0
    assert scheduler2.stats.cached == len(REQUESTS)


def test_answers_finished_before_a_failure_are_kept(spec, db_path):
    store = Store(db_path)
    failing = CountingBackend(spec, fail_after_batches=2)
    with pytest.raises(RuntimeError, match="backend died"):
        Scheduler(store, failing, "fp", show_progress=False).answer(REQUESTS)
    kept = store.cache_get("fp", [request_hash(r) for r in REQUESTS])
    assert 0 < len(kept) < len(REQUESTS)

    healthy = CountingBackend(spec)
    healthy._loaded = failing.load()
    scheduler = Scheduler(store, healthy, "fp", show_progress=False)
    scheduler.answer(REQUESTS)
    assert len(healthy.received) == len(REQUESTS) - len(kept)  # only what was missing
    assert scheduler.stats.cached == len(kept)
