"""`harness bench --model SPEC`: the same timelines from a model in this process.

hf and gguf generate in one worker thread (their generate calls block); the load's coroutines
hand it requests through a queue and await the timelines. The worker takes whatever requests
are waiting, up to `max_batch`, as one batch: hf runs a static batch (every row decodes until
the longest is done, and requests that arrive meanwhile wait for the next batch, which shows in
their TTFT); llama.cpp in-process serves one request at a time. vllm is natively async
(continuous batching) and runs in the event loop. A request's send time is when the load
handed it over, so queueing counts in TTFT as it would behind a server.

Peak memory: on CUDA the allocator's peak since the level started (vllm: device memory in use,
as it preallocates); on CPU the process's peak resident set size, which never goes down.
"""

from __future__ import annotations

import asyncio
import queue
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Protocol

from harness.bench.datasets import BenchPrompt, Tokenizer
from harness.bench.metrics import Timeline
from harness.core.errors import UsageError

BATCH_WINDOW_S = 0.005  # how long a free worker waits for the rest of a batch to arrive


@dataclass
class Job:
    prompt: BenchPrompt
    index: int
    request_id: str
    send_ns: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class BatchRunner(Protocol):
    name: str

    def run(self, jobs: list[Job]) -> list[Timeline]: ...

    def describe(self) -> dict: ...


def cpu_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform.startswith("linux") else peak / 2**20  # KiB on Linux, bytes on macOS


def _resolve(future: asyncio.Future, value: Timeline) -> None:
    if not future.done():
        future.set_result(value)


class ThreadEngine:
    """Feeds a blocking BatchRunner from the event loop, one batch at a time."""

    def __init__(self, runner: BatchRunner, max_batch: int, cuda: bool = False) -> None:
        self.runner = runner
        self.max_batch = max(1, max_batch)
        self.cuda = cuda
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"bench-{runner.name}", daemon=True)
        self._thread.start()

    async def stream(self, prompt: BenchPrompt, index: int, request_id: str) -> Timeline:
        loop = asyncio.get_running_loop()
        job = Job(prompt, index, request_id, perf_counter_ns(), loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get(timeout=BATCH_WINDOW_S)
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            try:
                timelines = self.runner.run(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch is failed requests, not a crash
                now = perf_counter_ns()
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
                timelines = [Timeline(index=j.index, send_ns=j.send_ns, end_ns=now, input_tokens=j.prompt.input_len,
                                      error=message, request_id=j.request_id) for j in batch]
            for j, timeline in zip(batch, timelines):
                j.loop.call_soon_threadsafe(_resolve, j.future, timeline)

    def set_max_batch(self, n: int) -> None:
        self.max_batch = max(1, n)

    def reset_peak_memory(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_memory_mb(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        return cpu_peak_rss_mb()

    def describe(self) -> dict:
        return self.runner.describe()

    async def aclose(self) -> None:
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)


def make_engine(spec_text: str, model_args: str | None, *, ignore_eos: bool, max_batch: int,
                tokenizer_name: str | None) -> tuple[Any, Tokenizer]:
    """(engine, tokenizer) for an in-process model spec; heavy imports happen here, lazily."""
    from harness.backends.base import parse_model_args

    prefix, sep, target = spec_text.partition(":")
    if not sep or not target:
        raise UsageError(f"malformed model spec {spec_text!r}: expected hf:PATH_OR_ID, gguf:PATH.gguf or vllm:PATH_OR_ID")
    args = parse_model_args(model_args)
    makers: dict[str, Callable[[], tuple[Any, Tokenizer]]] = {
        "hf": lambda: _hf(spec_text, model_args, ignore_eos, max_batch, tokenizer_name),
        "gguf": lambda: _gguf(target, args, ignore_eos, tokenizer_name),
        "vllm": lambda: _vllm(target, args, ignore_eos, tokenizer_name),
    }
    if prefix not in makers:
        raise UsageError(f"harness bench runs hf:, gguf: and vllm: models in-process (got {prefix}:); "
                         "for a server use --endpoint URL --model-name NAME")
    return makers[prefix]()


def _hf(spec_text: str, model_args: str | None, ignore_eos: bool, max_batch: int,
        tokenizer_name: str | None) -> tuple[Any, Tokenizer]:
    from harness.backends.base import make_backend, parse_model_spec
    from harness.bench.datasets import HFTokenizer
    from harness.bench.hf_stream import HFRunner

    backend = make_backend(parse_model_spec(spec_text, model_args))
    runner = HFRunner(backend, ignore_eos)
    tokenizer = HFTokenizer.load(tokenizer_name or runner.tokenizer_source())
    return ThreadEngine(runner, max_batch, cuda=runner.on_cuda), tokenizer


def _gguf(target: str, args: dict[str, str], ignore_eos: bool, tokenizer_name: str | None) -> tuple[Any, Tokenizer]:
    from harness.bench.datasets import HFTokenizer
    from harness.bench.llama_stream import GGUFRunner

    runner = GGUFRunner(target, args, ignore_eos)
    tokenizer: Tokenizer = HFTokenizer.load(tokenizer_name) if tokenizer_name else runner.tokenizer()
    return ThreadEngine(runner, 1), tokenizer


def _vllm(target: str, args: dict[str, str], ignore_eos: bool, tokenizer_name: str | None) -> tuple[Any, Tokenizer]:
    from harness.bench.datasets import HFTokenizer
    from harness.bench.vllm_stream import VLLMEngine

    engine = VLLMEngine(target, args, ignore_eos)
    return engine, HFTokenizer.load(tokenizer_name or target)
