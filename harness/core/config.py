"""What a run was asked to do: the tasks with their options, the model, and the judge of judged tasks.

These are plain values that the command line (or a test, or a recipe) fills in and the run stage reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "hf:smollm2-135m-instruct"
DEFAULT_BOOTSTRAP_ITERS = 100_000  # lm-eval's --bootstrap_iters default


@dataclass(frozen=True)
class JudgeConfig:
    """What `harness run --judge ...` asked for."""

    spec: str
    args: str | None = None
    repeats: int = 1
    mode: str = "single"
    baseline_answers: Path | None = None


@dataclass(frozen=True)
class TaskSelection:
    name: str
    num_fewshot: int | None = None
    limit: int | None = None
    data: str | None = None  # force a data source: mirror | hub | fixture


@dataclass(frozen=True)
class RayOptions:
    """Where `harness run --executor ray` answers requests: the cluster and the model replicas on it."""

    address: str | None = None  # None: a fresh local cluster on this machine (never RAY_ADDRESS)
    workers: int = 1  # model replicas per model
    worker_cpus: float = 1.0  # CPUs per replica (its torch threads)
    worker_gpus: float = 0.0  # GPUs per replica


@dataclass
class RunConfig:
    tasks: list[TaskSelection]
    model: str = DEFAULT_MODEL
    model_args: str | None = None
    batch_size: str | None = None
    seed: int = 1234
    tags: list[str] = field(default_factory=list)
    suite: str | None = None
    db: Path | None = None
    show_progress: bool = True
    sandbox: str = "auto"  # where code tasks execute: auto | docker | bwrap | local
    allow_unsandboxed_code: bool = False  # lets --sandbox local run model code on this machine
    judge: JudgeConfig | None = None  # grades judged tasks (mt_bench): --judge SPEC and its options
    ray: RayOptions | None = None  # answer requests on Ray model replicas (--executor ray); None: in this process
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS  # resamples for a corpus metric's stderr; 0: none (as lm-eval)
