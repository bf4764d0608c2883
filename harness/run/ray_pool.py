"""Model replicas on Ray: a backend whose requests are answered by actors, each holding one loaded model.

The driver keeps everything that decides numbers: instances, deduplication, the cache, scoring,
aggregation and every database write (DuckDB has one writer). `RayBackend` wraps the driver's
backend (built, as every backend is, without loading weights: it gives the fingerprint, the checks
and the metadata) and hands each batch of uncached requests to a `Replica` actor, which builds the
same backend from the same spec, loads it once, and answers with the backend's own code, so a
replica's answers are the serial run's answers up to batch composition (the hf backend's
batch-invariance tolerance).

Batches: the requests of one kind are put in text order and cut into runs of about equal length
(characters), never between requests that share a context, at least four per replica, so the
choices of one question and the questions that share a few-shot prefix stay together (the backend
computes a shared prefix once per batch); a slow replica does not hold the run: each replica has
at most two batches in flight and the next, largest first, goes to whichever finishes first
(unordered, ActorPool-style). Answers are yielded as their batch completes, and the scheduler
writes them to the cache (harness.run.scheduler) as it does for a local backend.

Faults: a replica process that dies (kill -9, out of memory) loses only the batch it was
answering; that batch is dealt out again, and Ray restarts the actor (up to MAX_RESTARTS times).
A replica that cannot start (a bad model path on the workers) or cannot be placed within
HARNESS_RAY_START_TIMEOUT_S is a UsageError before the database is opened.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from harness.backends.base import Backend, ModelSpec, Progress, backend_target, make_backend, register_backend
from harness.core.config import RayOptions
from harness.core.errors import UsageError

log = logging.getLogger("harness.ray")
MAX_RESTARTS = 3
BATCH_REQUESTS = 64  # requests per batch at most: a lost batch costs little, and batches stay worth a call
IN_FLIGHT = 2  # batches per replica at once: the next is queued while one computes
DEFAULT_START_TIMEOUT_S = 120.0


def start_timeout() -> float:
    try:
        return float(os.environ.get("HARNESS_RAY_START_TIMEOUT_S", DEFAULT_START_TIMEOUT_S))
    except ValueError:
        raise UsageError("HARNESS_RAY_START_TIMEOUT_S: expected seconds") from None


class Replica:
    """One model on one Ray worker (a Ray actor: `ray.remote(Replica)` in `ReplicaPool`)."""

    def __init__(self, prefix: str, target: str, args: dict[str, str], threads: int, implementation: str) -> None:
        import torch  # a core dependency: every install has it

        register_backend(prefix, implementation)  # a backend the driver registered (a plugin) exists here too
        torch.set_num_threads(max(1, threads))
        self.backend = make_backend(ModelSpec(prefix, target, dict(args)))

    def ready(self) -> tuple[int, str]:
        self.backend.load()
        return os.getpid(), self.backend.fingerprint()

    def answer(self, kind: str, requests: list) -> list[tuple[int, Any]]:
        method = {"loglikelihood": self.backend.loglikelihood, "loglikelihood_rolling": self.backend.loglikelihood_rolling,
                  "generate": self.backend.generate}[kind]
        return list(method(requests, lambda k: None))


def _size(request: object) -> int:
    """Characters of text the request carries (context and continuation, prompt, or chat messages)."""
    total = 0
    for key, value in vars(request).items():
        if key in ("kind", "doc_key"):
            continue
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, (list, tuple)):
            total += sum(len(str(m.get("content", ""))) if isinstance(m, dict) else len(str(m)) for m in value)
    return total


def _text(request: object) -> str:
    for key in ("context", "prompt", "text"):
        value = getattr(request, key, None)
        if isinstance(value, str):
            return value
    return str(getattr(request, "messages", ""))


def balanced_batches(requests: Sequence, replicas: int, batch_requests: int = BATCH_REQUESTS) -> list[list[int]]:
    """Indices of `requests` in batches of about equal length (characters), at least four per replica.

    The requests are put in text order and cut into consecutive runs, never between requests with the
    same context: the choices of one question stay in one batch, and so do the neighbours that share a
    long prefix (every 5-shot MMLU question of a subject starts with the same five examples), which the
    backends compute once per batch (harness.backends.hf.prefix). Interleaving requests over batches,
    as lm-eval does for its vLLM replicas, balances lengths too but splits those prefixes (measured:
    1.7x the serial time on 5-shot MMLU). Largest batch first, so the last to finish is a small one.
    """
    if not requests:
        return []
    texts, sizes = [_text(r) for r in requests], [_size(r) for r in requests]
    order = sorted(range(len(requests)), key=texts.__getitem__)
    count = min(max(4 * replicas, math.ceil(len(order) / batch_requests)), len(order))
    remaining = float(sum(sizes))
    target = remaining / count  # re-aimed at each cut: what is left over the batches still to fill
    batches: list[list[int]] = [[]]
    filled = 0.0
    for n, i in enumerate(order):
        same_context = n > 0 and texts[order[n - 1]] == texts[i]
        if filled >= target and not same_context and len(batches) < count:
            remaining -= filled
            target = remaining / (count - len(batches))
            batches.append([])
            filled = 0.0
        batches[-1].append(i)
        filled += sizes[i]
    return sorted(batches, key=lambda b: -sum(sizes[i] for i in b))


def _cause(exc: BaseException) -> str:
    """The original error's last line out of Ray's wrapped traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line.split(": ", 1)[1] if ": " in line else line
    return lines[-1] if lines else type(exc).__name__


class ReplicaPool:
    def __init__(self, spec: ModelSpec, options: RayOptions, fingerprint: str) -> None:
        import ray

        self.ray = ray
        threads = max(1, int(options.worker_cpus))
        actor = ray.remote(Replica).options(
            num_cpus=options.worker_cpus, num_gpus=options.worker_gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}})
        implementation = backend_target(spec.prefix)
        self.actors = [actor.remote(spec.prefix, spec.target, spec.args, threads, implementation)
                       for _ in range(options.workers)]
        self.pids: list[int] = []
        try:
            self._wait_ready(options, fingerprint)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, options: RayOptions, fingerprint: str) -> None:
        ray = self.ray
        refs = [a.ready.remote() for a in self.actors]
        timeout = start_timeout()
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in done:
            try:
                pid, seen = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise UsageError(f"a Ray worker could not load the model: {_cause(exc)}") from None
            if seen != fingerprint:
                raise UsageError("a Ray worker sees a different model than this machine (fingerprint "
                                 f"{seen[:12]} != {fingerprint[:12]}): the model path must hold the same files on every node")
            self.pids.append(pid)
        if pending:
            total = ray.cluster_resources()
            raise UsageError(
                f"{len(pending)} of {len(refs)} Ray workers could not be placed within {timeout:g} s "
                f"(each asks {options.worker_cpus:g} CPU and {options.worker_gpus:g} GPU; the cluster has "
                f"{total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs): fewer --workers or smaller "
                "--worker-cpus/--worker-gpus, or HARNESS_RAY_START_TIMEOUT_S to wait longer")

    def answer(self, kind: str, requests: Sequence, progress: Progress) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        queue = deque(balanced_batches(requests, len(self.actors)))
        alive = list(range(len(self.actors)))
        busy = dict.fromkeys(alive, 0)
        deaths = dict.fromkeys(alive, 0)  # one per process death: every batch it held fails with it
        inflight: dict[Any, tuple[int, int, list[int]]] = {}  # ref -> (replica, its deaths at dispatch, batch)
        while queue or inflight:
            for a in list(alive):
                while queue and busy[a] < IN_FLIGHT:
                    batch = queue.popleft()
                    ref = self.actors[a].answer.remote(kind, [requests[i] for i in batch])
                    inflight[ref] = (a, deaths[a], batch)
                    busy[a] += 1
            if not inflight:
                raise RuntimeError("every Ray worker died; the answers so far are in the cache (re-run to resume)")
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            a, seen_deaths, batch = inflight.pop(ref)
            busy[a] -= 1
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the replica's process died: deal the batch out again
                queue.appendleft(batch)
                if seen_deaths == deaths[a]:  # the first of its batches to report this death
                    deaths[a] += 1
                    log.warning("Ray worker %d died (%s); its batches go out again", a, type(exc).__name__)
                    if deaths[a] > MAX_RESTARTS and a in alive:
                        alive.remove(a)
                    time.sleep(0.2)
                continue
            except ray.exceptions.RayTaskError as exc:  # the backend raised: the same error as in a local run
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
                if isinstance(cause, UsageError):
                    raise UsageError(str(cause)) from None
                raise RuntimeError(f"a Ray worker failed: {_cause(exc)}") from None
            for local, response in results:
                yield batch[local], response
            progress(len(batch))

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # an actor that is already gone cannot be killed again
                self.ray.kill(actor)
        self.actors = []


class RayBackend(Backend):
    """The driver's backend for identity and checks; requests answered by a ReplicaPool."""

    def __init__(self, inner: Backend, options: RayOptions) -> None:
        super().__init__(inner.spec)
        self.inner, self.options = inner, options
        self.name, self.supports = inner.name, inner.supports
        self.pool: ReplicaPool | None = None

    def start(self) -> None:
        self.pool = ReplicaPool(self.inner.spec, self.options, self.inner.fingerprint())

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def check(self, kinds: set[str]) -> None:
        self.inner.check(kinds)

    def describe(self) -> dict:
        info = self.inner.describe()
        info["executor"] = {"kind": "ray", "workers": self.options.workers, "worker_cpus": self.options.worker_cpus,
                            "worker_gpus": self.options.worker_gpus, "address": "local" if self.options.address is None
                            else "given"}
        return info

    def _answer(self, kind: str, requests: Sequence, progress: Progress) -> Iterator[tuple[int, Any]]:
        if self.pool is None:
            self.start()
        assert self.pool is not None
        return self.pool.answer(kind, requests, progress)

    def loglikelihood(self, requests, progress):  # type: ignore[no-untyped-def]
        return self._answer("loglikelihood", requests, progress)

    def loglikelihood_rolling(self, requests, progress):  # type: ignore[no-untyped-def]
        return self._answer("loglikelihood_rolling", requests, progress)

    def generate(self, requests, progress):  # type: ignore[no-untyped-def]
        return self._answer("generate", requests, progress)

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.close()
        finally:
            self.inner.close()
