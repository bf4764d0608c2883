"""Scoring generated code: run each sample in the run's sandbox, count passes, pass@k.

The sandbox is chosen once per run by the evaluator (`open_sandbox`) and handed to the tasks'
score functions in their `ScoreContext`, so a task stays a plain value that never decides where
code runs. Model code never executes in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import comb

from harness.core.errors import UsageError
from harness.core.task import Scored
from harness.sandbox import Limits, Sandbox, check_programs
from harness.scoring.filters import truncate_at_stop

log = logging.getLogger("harness")

EXECUTES_CODE = "executes_code"  # task tag: the evaluator opens a sandbox for tasks carrying it
ERROR_EXCERPT_CHARS = 600



def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), for n samples of which c passed."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


# --- the run's sandbox -------------------------------------------------------------------------


def needs_sandbox(tasks: Sequence) -> bool:
    return any(EXECUTES_CODE in task.tags for task in tasks)


def open_sandbox(kind: str, allow_unsandboxed: bool):
    """The sandbox for this run; UsageError (exit 2) when none is available and local is not allowed."""
    from harness.sandbox import get_sandbox

    if kind == "local" and allow_unsandboxed:
        log.warning("code tasks run UNSANDBOXED on this machine (--sandbox local --allow-unsandboxed-code)")
    return get_sandbox(kind, allow_unsandboxed=allow_unsandboxed)


# --- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """What runs in the sandbox for one sample: `test` defines check(candidate), called on `entry_point`."""

    source: str
    test: str
    entry_point: str


def error_excerpt(verdict) -> str:
    if verdict.status == "passed":
        return ""
    text = verdict.stderr.strip() or verdict.detail or verdict.stdout.strip()
    return text[-ERROR_EXCERPT_CHARS:]


def score_completions(completions: Sequence[str], stop: Sequence[str], to_program: Callable[[str], Program],
                      ks: Sequence[int], sandbox: Sandbox | None) -> Scored:
    """Cut each completion at the stop sequences, run them, and report pass@k for each k <= n.

    All n programs go to the sandbox at once (`check_programs` -> `Sandbox.run_many`): on docker and bwrap they run
    in warm sessions, several at a time, with the same verdict each would get alone."""
    if sandbox is None:
        raise UsageError("this task executes code and needs a sandbox: run it through `harness run` "
                         "(--sandbox auto|docker|bwrap|local), or pass one in its ScoreContext")
    cut = [truncate_at_stop(raw, tuple(stop)) for raw in completions]
    programs = [to_program(completion) for completion in cut]
    verdicts = check_programs(sandbox, [(p.source, p.test, p.entry_point) for p in programs], Limits())
    samples = [{"completion": completion, "status": verdict.status, "error": error_excerpt(verdict)}
               for completion, verdict in zip(cut, verdicts)]
    n = len(samples)
    passed = sum(s["status"] == "passed" for s in samples)
    metrics = {f"pass@{k}": pass_at_k(n, passed, k) for k in ks if k <= n} if n else {}
    return Scored(metrics=metrics, response={"samples": samples, "n": n, "passed": passed},
                  extracted=samples[0]["status"] if samples else None)
