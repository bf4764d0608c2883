"""Several models in one `harness run`: one run per model, each stored and tagged as usual.

With `--executor ray` the models are evaluated concurrently, each on replicas of its own (a driver
thread per model; Ray is initialised once for all of them); otherwise one after another. A model
that fails does not stop the others: each outcome carries its result or its error.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.core.config import RunConfig
from harness.run.evaluator import RunResult, evaluate
from harness.run.ray_cluster import ray_session
from harness.store.db import Store


@dataclass(frozen=True)
class Outcome:
    model: str
    result: RunResult | None
    error: Exception | None


def _one(config: RunConfig, store_path: Path) -> Outcome:
    try:
        return Outcome(config.model, evaluate(config, store_path), None)
    except Exception as exc:  # reported with the model's name; KeyboardInterrupt still stops everything
        return Outcome(config.model, None, exc)


def evaluate_models(configs: list[RunConfig], store_path: Path) -> list[Outcome]:
    if len(configs) == 1:
        return [Outcome(configs[0].model, evaluate(configs[0], store_path), None)]
    ray = configs[0].ray
    if ray is None:
        return [_one(c, store_path) for c in configs]
    Store(store_path).close()  # created and migrated once, before the threads open it together
    with ray_session(ray), ThreadPoolExecutor(max_workers=len(configs), thread_name_prefix="harness-model") as pool:
        return list(pool.map(lambda c: _one(c, store_path), configs))
