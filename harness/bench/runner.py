"""One serving benchmark end to end: engine, prompts, levels, store.

Everything runs in one event loop (uvloop when installed), so keep-alive connections carry over
from level to level. Before the first level an endpoint is probed (reachable, serves the
model, which usage options it accepts); anything that stops the run there is a UsageError.
During a level the garbage collector is off: a full collection over a large heap stalls the loop
for milliseconds, which would be added to whichever request is in flight.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bench import store as bench_store
from harness.bench.datasets import BenchPrompt, HFTokenizer, Tokenizer, check_dataset, load_prompts
from harness.bench.load import Bounds, LoadLevel, Outcome, run_level
from harness.bench.metrics import LevelSummary, Slo, summarize
from harness.core.errors import UsageError
from harness.core.redact import strip_userinfo


@dataclass
class BenchConfig:
    endpoint: str | None = None
    model_name: str | None = None
    model: str | None = None  # in-process spec (hf:, gguf:, vllm:)
    model_args: str | None = None
    api: str = "completions"
    concurrency: tuple[int, ...] = (1,)
    rates: tuple[float, ...] | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_prompts: int | None = 200
    duration_s: float | None = None
    input_len: int = 512
    output_len: int | None = 128
    dataset: str = "random"
    range_ratio: float = 0.0
    ignore_eos: bool = False
    warmup: int | None = None  # None: one request per concurrent stream
    slo: Slo = field(default_factory=Slo)
    gpu_cost_per_hour: float | None = None
    seed: int = 0
    tokenizer: str | None = None
    api_key: str | None = None
    timeout_s: float = 600.0
    tags: tuple[str, ...] = ()

    def levels(self) -> list[LoadLevel]:
        try:
            if self.rates:
                return [LoadLevel(self.max_concurrency, rate, self.burstiness) for rate in self.rates]
            return [LoadLevel(c, None, self.burstiness) for c in self.concurrency]
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def validate(self) -> None:
        if (self.endpoint is None) == (self.model is None):
            raise UsageError("give one of --endpoint URL (a server) or --model SPEC (in-process)")
        if self.num_prompts is None and self.duration_s is None:
            raise UsageError("bound each level by --num-prompts N or --duration S")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise UsageError("--num-prompts must be at least 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise UsageError("--duration must be positive")
        if self.gpu_cost_per_hour is not None and not self.gpu_cost_per_hour >= 0:
            raise UsageError("--gpu-cost-per-hour must be a non-negative number")
        if self.rates and any(math.isinf(r) for r in self.rates) and self.max_concurrency is None \
                and self.num_prompts is None:
            raise UsageError("--rate inf with only --duration never stops sending: add --max-concurrency or --num-prompts")
        if self.input_len < 1:
            raise UsageError("--input-len must be at least 1")
        check_dataset(self.dataset)
        self.levels()

    def warmup_for(self, level: LoadLevel) -> int:
        if self.warmup is not None:
            return self.warmup
        return level.concurrency or 1

    def target(self) -> str:
        """What is benchmarked, as it may be shown and stored (credentials in a URL masked)."""
        return strip_userinfo(self.endpoint or self.model or "")


@dataclass
class BenchResult:
    bench_id: str
    levels: list[LevelSummary]
    token_count_source: str
    describe: dict
    hardware: dict
    tokenizer: str


def new_bench_id() -> str:
    return "bench-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def endpoint_tokenizer(config: BenchConfig) -> Tokenizer:
    """--tokenizer; else the served model's own when it is on this machine (a directory, a .gguf
    file, a hub id in the local cache: a guess never goes to the network); else the embedded
    SmolLM2 tokenizer, which then only shapes prompts and counts tokens when the server reports
    no usage (the run records which tokenizer it used)."""
    if config.tokenizer:
        return _load_tokenizer(config.tokenizer)
    name = config.model_name or ""
    local = _local_tokenizer_source(name) if name else None
    if local is not None:
        try:
            return _load_tokenizer(local)
        except (UsageError, OSError, ValueError):
            pass
    return HFTokenizer.load("embedded")


def _local_tokenizer_source(name: str) -> str | None:
    path = Path(name).expanduser()
    if path.is_dir() or (name.endswith(".gguf") and path.is_file()):
        return str(path)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "tokenizer.json")
    except Exception:  # noqa: BLE001 - not a hub id, or no hub library: no local tokenizer
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def _load_tokenizer(name: str) -> Tokenizer:
    if name.endswith(".gguf") and Path(name).is_file():
        import llama_cpp

        from harness.bench.llama_stream import LlamaTokenizer

        llm = llama_cpp.Llama(model_path=name, vocab_only=True, verbose=False)
        return LlamaTokenizer(llm, f"gguf:{Path(name).name}")
    return HFTokenizer.load(name)


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop  # optional: a faster event loop where it is installed
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Bench:
    """Holds the engine and prompts of one benchmark; `run` drives the levels."""

    def __init__(self, config: BenchConfig, db_path: Path) -> None:
        config.validate()
        self.config = config
        self.db_path = db_path
        self.engine: Any = None
        self.tokenizer: Tokenizer | None = None
        self.bench_id: str | None = None  # set once the benchmark has a row in the database

    def _prompts(self) -> tuple[list[BenchPrompt], list[BenchPrompt]]:
        c = self.config
        n = c.num_prompts if c.num_prompts is not None else 1000
        warm = max(self.config.warmup_for(level) for level in c.levels())
        # Warm-up prompts are extra ones: reusing measured prompts would hand them a warm prefix cache.
        prompts = load_prompts(c.dataset, self.tokenizer, n=n + warm, input_len=c.input_len, output_len=c.output_len,
                               seed=c.seed, range_ratio=c.range_ratio)
        if len(prompts) > n:
            return prompts[:n], prompts[n:]
        return prompts, prompts[:warm]

    def run(self, on_level: Callable[[LevelSummary], None] = lambda s: None,
            progress: Callable[[LoadLevel, int | None], Callable[[Outcome], None]] | None = None) -> BenchResult:
        return _run_loop(self._main(on_level, progress))

    async def _start(self) -> None:
        """Engine and tokenizer; an endpoint is probed first (the model name may come from it)."""
        c = self.config
        if c.endpoint is not None:
            from harness.bench.client import OpenAIStreamClient

            client = OpenAIStreamClient(c.endpoint, c.model_name or "", api=c.api, api_key=c.api_key,
                                        ignore_eos=c.ignore_eos, timeout=c.timeout_s)
            self.engine = client
            if not c.model_name:
                served = await client.served_models()
                if len(served) != 1:
                    raise UsageError(f"pass --model-name: the endpoint serves {len(served)} models"
                                     + (f" ({', '.join(served[:10])})" if served else ""))
                client.model = c.model_name = served[0]
            await client.probe(BenchPrompt("Hello", None, None, 4))
            self.tokenizer = endpoint_tokenizer(c)
            client.count_tokens = self.tokenizer.count
        else:
            from harness.bench.inprocess import make_engine

            assert c.model is not None
            self.engine, self.tokenizer = make_engine(c.model, c.model_args, ignore_eos=c.ignore_eos,
                                                      max_batch=max(c.concurrency), tokenizer_name=c.tokenizer)

    async def _main(self, on_level: Callable[[LevelSummary], None], progress: Any) -> BenchResult:
        from harness.core import metadata
        from harness.store.db import Store

        c = self.config
        try:
            await self._start()
            prompts, warm_prompts = self._prompts()
            describe = self.engine.describe()
            meta = metadata.collect(describe, c.seed, sys.argv[1:])  # collect() redacts argv
            if c.endpoint is not None:
                meta["hardware_note"] = "the machine that ran the client; the server may run elsewhere"
            store = Store(self.db_path)
        except BaseException:
            await self._close()
            raise
        bench_id = self.bench_id = new_bench_id()
        tokenizer_name = getattr(self.tokenizer, "name", None)
        fields = {"target": c.target(), "model": c.model_name or c.model or "", "backend": describe.get("backend", "?"),
                  "api": c.api if c.endpoint else None, "dataset": c.dataset, "input_len": c.input_len,
                  "output_len": c.output_len, "num_prompts": c.num_prompts, "duration_s": c.duration_s,
                  "warmup": c.warmup, "ignore_eos": c.ignore_eos, "seed": c.seed, "slo": c.slo.as_dict(),
                  "gpu_cost_per_hour": c.gpu_cost_per_hour, "tokenizer": tokenizer_name, "metadata": meta,
                  "config": {"concurrency": list(c.concurrency), "rates": _rates_json(c.rates), "burstiness": c.burstiness,
                             "max_concurrency": c.max_concurrency, "range_ratio": c.range_ratio, "timeout_s": c.timeout_s}}
        summaries: list[LevelSummary] = []
        sources: list[str] = []
        status = "failed"
        try:
            bench_store.create_bench(store, bench_id, fields, list(c.tags))
            store.release()  # readers may look while a level runs
            for i, level in enumerate(c.levels()):
                summary, timelines = await self._level(i, level, prompts, warm_prompts, bench_id, progress)
                bench_store.write_level(store, bench_id, i, summary, timelines, datetime.now(UTC).replace(tzinfo=None))
                store.release()
                summaries.append(summary)
                sources.append(summary.token_source)
                on_level(summary)
            status = "complete"
        finally:
            source = _overall_source(sources)
            bench_store.finish_bench(store, bench_id, status, source)
            store.close()
            await self._close()
        return BenchResult(bench_id, summaries, source, describe, meta.get("hardware", {}), tokenizer_name or "")

    async def _level(self, i: int, level: LoadLevel, prompts: list[BenchPrompt], warm_prompts: list[BenchPrompt],
                     bench_id: str, progress: Any) -> tuple[LevelSummary, list]:
        c = self.config
        engine = self.engine
        if hasattr(engine, "set_max_batch"):  # hf: a static batch holds up to the level's concurrency (or cap)
            engine.set_max_batch(level.concurrency or 1)
        if hasattr(engine, "reset_peak_memory"):
            engine.reset_peak_memory()
        on_done = progress(level, c.num_prompts) if progress else (lambda t: None)
        bounds = Bounds(c.num_prompts, c.duration_s)
        gc.collect()
        gc.disable()
        try:
            timelines = await run_level(engine, prompts, level, bounds, warmup_prompts=warm_prompts[: c.warmup_for(level)],
                                        seed=c.seed + i, prefix=f"{bench_id}-L{i}", on_done=on_done)
        finally:
            gc.enable()
        peak = engine.peak_memory_mb() if hasattr(engine, "peak_memory_mb") else None
        summary = summarize(timelines, concurrency=level.concurrency, rate=level.rate, burstiness=level.burstiness,
                            slo=c.slo, gpu_cost_per_hour=c.gpu_cost_per_hour, peak_memory_mb=peak)
        return summary, timelines

    async def _close(self) -> None:
        if self.engine is not None and hasattr(self.engine, "aclose"):
            await self.engine.aclose()


def _rates_json(rates: tuple[float, ...] | None) -> list | None:
    return None if rates is None else [("inf" if math.isinf(r) else r) for r in rates]


def _overall_source(sources: list[str]) -> str:
    distinct = sorted(set(s for s in sources if s != "none"))
    return distinct[0] if len(distinct) == 1 else ("none" if not distinct else "mixed(" + ",".join(distinct) + ")")

