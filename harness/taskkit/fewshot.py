"""Few-shot samplers, reproducing lm-evaluation-harness 0.4.13 (`lm_eval/api/samplers.py`).

- `RandomSampler` is lm-eval's default `ContextSampler`: one `random.Random(seed)` per task,
  shared by all documents in document order, so document i gets the i-th draw. When the
  few-shot pool is the evaluation split itself it draws n + 1 and drops the document being
  evaluated (compared by value, as lm-eval does).
- `FirstNSampler` is lm-eval's `first_n`: the first n of the pool, in order (MMLU, gsm8k_cot).

Seed: lm-eval's `--seed N` sets its few-shot seed to N, and its default few-shot seed is 1234
(`DEFAULT_FEWSHOT_SEED`, also the default of our `--seed`). We follow the same rule: the run
seed *is* the few-shot seed, so the default run is byte-identical to lm-eval's default run and
`--seed N` here matches `lm_eval --seed N` (or `--fewshot_random_seed N`).

Deliberate difference: asking for more shots than a `first_n` pool holds is a `UsageError`
here (lm-eval fails an assertion).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

from harness.core.errors import UsageError

DEFAULT_FEWSHOT_SEED = 1234
SamplerKind = Literal["random", "first_n"]


class Sampler(Protocol):
    def sample(self, n: int, eval_doc: dict | None = None) -> list[dict]: ...


def _without(doc: dict, docs: Sequence[dict]) -> list[dict]:
    return [d for d in docs if d != doc]


class RandomSampler:
    """lm-eval's default sampler: `rnd.sample(pool, n)`, or n + 1 minus the evaluated doc."""

    def __init__(self, pool: Sequence[dict], seed: int = DEFAULT_FEWSHOT_SEED) -> None:
        self.pool = list(pool)
        self.rnd = random.Random(seed)

    def sample(self, n: int, eval_doc: dict | None = None) -> list[dict]:
        if n < 0:
            raise UsageError("num_fewshot must be >= 0")
        if n == 0:
            return []
        if not self.pool:
            raise UsageError(f"{n}-shot needs few-shot documents, but this data source has none")
        if n + (1 if eval_doc else 0) > len(self.pool):
            raise UsageError(f"{n}-shot asks for more few-shot documents than the {len(self.pool)} available")
        if not eval_doc:  # lm-eval tests truthiness: an empty doc counts as "no doc"
            return self.rnd.sample(self.pool, n)
        shots = _without(eval_doc, self.rnd.sample(self.pool, n + 1))[:n]
        if len(shots) < n:  # the pool held copies of eval_doc: lm-eval resamples without any of them
            shots = self.rnd.sample(_without(eval_doc, self.pool), n)
        return shots


class FirstNSampler:
    """lm-eval's `first_n`: the first n documents of the pool (minus the evaluated doc, if given)."""

    def __init__(self, pool: Sequence[dict], seed: int = DEFAULT_FEWSHOT_SEED) -> None:
        self.pool = list(pool)

    def sample(self, n: int, eval_doc: dict | None = None) -> list[dict]:
        if n < 0:
            raise UsageError("num_fewshot must be >= 0")
        if n == 0:
            return []
        pool = _without(eval_doc, self.pool) if eval_doc is not None else self.pool
        if n > len(pool):
            raise UsageError(f"{n}-shot asks for more few-shot documents than the {len(pool)} available")
        return pool[:n]


def make_sampler(kind: SamplerKind, pool: Sequence[dict], seed: int = DEFAULT_FEWSHOT_SEED) -> Sampler:
    """A fresh sampler: build one per task and per `build` call, as lm-eval does per task."""
    if kind == "random":
        return RandomSampler(pool, seed)
    if kind == "first_n":
        return FirstNSampler(pool, seed)
    raise ValueError(f"unknown few-shot sampler {kind!r}")
